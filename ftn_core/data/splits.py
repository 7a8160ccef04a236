"""Which images a dataset has, and in which split: read without torch, so that what only lists
a dataset (a report's rank lists) does not load it. ``ftn_core.data.loading`` turns the splits
into loaders."""

from __future__ import annotations

from ftn_core.config import DataConfig
from ftn_core.data import custom, readers
from ftn_core.data.types import DatasetSplits


def load_splits(cfg: DataConfig) -> DatasetSplits:
    """The dataset named by ``cfg.dataset``: generated (synthetic) or read from ``cfg.root``."""
    if cfg.dataset == "synthetic":
        from ftn_core.data.synthetic import load_synthetic

        return load_synthetic(
            cfg.root,
            cfg.synthetic_size,
            cfg.synthetic_seed,
            cfg.skip_bad_images,
            test_ids=cfg.synthetic_test_ids,
        )
    return load_dataset(cfg.dataset, cfg.root, skip_bad_images=cfg.skip_bad_images)


def load_dataset(
    name: str, root: str, skip_bad_images: bool = False, verify_images: bool = True
) -> DatasetSplits:
    """Read dataset ``name`` from ``root``: one of ``readers.KNOWN_DATASETS`` found under it, or
    your own images (``folder``: a folder, ``csv``: a CSV file; ``ftn_core.data.custom``). User
    errors raise ``FTNError``."""
    if name in ("folder", "csv"):
        reader = custom.read_folder if name == "folder" else custom.read_csv
        return reader(root, skip_bad_images=skip_bad_images, verify_images=verify_images)
    return readers.read_known(name, root, skip_bad_images, verify_images)
