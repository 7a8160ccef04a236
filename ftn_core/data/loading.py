"""From a ``DataConfig`` to the loaders the engine uses (the only data code that reads config)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from ftn_core.config import DataConfig
from ftn_core.data.dataset import ReIDDataset
from ftn_core.data.sampler import PKSampler
from ftn_core.data.transforms import BatchAugment, build_transforms, resize_transform
from ftn_core.data.types import DatasetSplits
from ftn_core.errors import FTNError


CACHE_BYTES = 1 << 29
"""A split's images are kept decoded and resized in memory (per process) when they fit in
512 MiB at the input size: the embedded benchmark at the cpu preset's 64×32 takes 15 MB."""


@dataclass
class DataBundle:
    splits: DatasetSplits
    train_loader: DataLoader
    sampler: PKSampler
    query_loader: DataLoader
    gallery_loader: DataLoader
    train_augment: BatchAugment | None = None
    """Random patch and erasing, applied by the trainer to each training batch with the key
    (seed, epoch, batch)."""

    @property
    def num_classes(self) -> int:
        return self.splits.num_train_pids


def load_splits(cfg: DataConfig) -> DatasetSplits:
    """The dataset named by ``cfg.dataset``: generated (synthetic) or read from ``cfg.root``."""
    if cfg.dataset == "synthetic":
        from ftn_core.data.synthetic import load_synthetic

        return load_synthetic(cfg.root, cfg.synthetic_size, cfg.synthetic_seed, cfg.skip_bad_images,
                              test_ids=cfg.synthetic_test_ids)
    from ftn_core.data.readers import load_dataset

    return load_dataset(cfg.dataset, cfg.root, skip_bad_images=cfg.skip_bad_images)


def loader_options(workers: int, persistent: bool = True) -> dict:
    """DataLoader settings for ``workers`` processes: pinned memory when a GPU is there (so the
    copy is asynchronous), workers kept alive across epochs (no restart and re-import per
    epoch) and 4 batches prefetched per worker. ``benchmarks/data_bench.py`` measures them."""
    options = {"num_workers": workers, "pin_memory": torch.cuda.is_available()}
    if workers > 0:
        options.update(persistent_workers=persistent, prefetch_factor=4)
    return options


def build_data(cfg: DataConfig, seed: int = 0, rank: int = 0, world_size: int = 1,
               splits: DatasetSplits | None = None, eval_batch: int = 128,
               train_masks: bool = False) -> DataBundle:
    """PK-sampled training loader (split over DDP ranks) and query / gallery loaders.

    ``train_masks``: training batches also carry the person masks (the ``oracle`` target);
    the dataset must have them (synthetic data).
    """
    splits = splits if splits is not None else load_splits(cfg)
    if train_masks and not all(s.mask_path for s in splits.train):
        raise FTNError(f"model.mask=oracle needs ground-truth person masks, which {cfg.dataset} "
                       f"does not have; it runs on the synthetic data only")
    prepare = resize_transform(cfg.height, cfg.width)
    train_tf = build_transforms(cfg.height, cfg.width, train=True, flip=cfg.flip, pad=cfg.pad, resize=False)
    test_tf = build_transforms(cfg.height, cfg.width, train=False, resize=False)
    def fits(samples) -> bool:  # cache decoded, resized images in memory
        return len(samples) * 3 * cfg.height * cfg.width <= CACHE_BYTES

    sampler = PKSampler([s.pid for s in splits.train], cfg.num_ids, cfg.num_instances, seed=seed,
                        rank=rank, world_size=world_size)
    train = DataLoader(ReIDDataset(splits.train, train_tf, train_masks, prepare, cache=fits(splits.train)),
                       batch_sampler=KeyedBatches(sampler), **loader_options(cfg.workers))

    def test_loader(samples, with_mask):
        return DataLoader(ReIDDataset(samples, test_tf, with_mask, prepare, cache=fits(samples)), batch_size=eval_batch,
                          shuffle=False, **loader_options(cfg.workers, persistent=False))

    # Query masks (synthetic data) feed the foreground-focus score; the gallery needs none.
    query = test_loader(splits.query, with_mask=any(s.mask_path for s in splits.query))
    return DataBundle(splits, train, sampler, query, test_loader(splits.gallery, with_mask=False),
                      BatchAugment(cfg.random_patch, cfg.random_erasing))


class KeyedBatches:
    """The PK sampler's batches as ``(index, key)`` items, ``key`` = (seed, epoch, position of
    the image in the epoch over all ranks): each image's augmentation draws are keyed by it."""

    def __init__(self, sampler: PKSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        s = self.sampler
        size = s.num_ids * s.num_instances
        for k, batch in enumerate(s):
            first = (s.rank + k * s.world_size) * size
            yield [(index, (s.seed, s.epoch, first + j)) for j, index in enumerate(batch)]
