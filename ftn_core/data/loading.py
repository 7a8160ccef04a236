"""From a ``DataConfig`` to the loaders the engine uses (the only data code that reads config)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from ftn_core.config import DataConfig
from ftn_core.data.dataset import DecodedImages, ReIDDataset
from ftn_core.data.sampler import PKSampler
from ftn_core.data.splits import load_dataset, load_splits  # noqa: F401 - their home before
from ftn_core.data.transforms import BatchAugment, build_transforms, resize_transform
from ftn_core.data.types import DatasetSplits
from ftn_core.errors import FTNError

CACHE_BYTES = 1 << 29
"""A split's images are kept decoded and resized in memory (per process) when they fit in
512 MiB at the input size: the embedded benchmark at the cpu preset's 64×32 takes 15 MB (96 MB
with ``data.synthetic_test_ids=1000``)."""
EVAL_BATCH = 128
"""Test images per forward pass. On a 2-core AVX-512 CPU at the cpu preset, 64 and 128 took the
same time per image and 256 and 512 more; it stays 128 because the last bits of a feature can
depend on the size of its batch (oneDNN chooses kernels by shape), and the logged numbers were
made at 128."""
_DECODED: dict[tuple, tuple[DecodedImages, int]] = {}
"""Test splits decoded and resized, shared by every ``build_data`` of the process (the runs of
one command), least recently used first; at most ``2 · CACHE_BYTES`` in all."""


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


def loader_options(workers: int, persistent: bool = True) -> dict:
    """DataLoader settings for ``workers`` processes: pinned memory when a GPU is there (so the
    copy is asynchronous), workers kept alive across epochs (no restart and re-import per
    epoch) and 4 batches prefetched per worker. ``benchmarks/data_bench.py`` measures them."""
    options = {"num_workers": workers, "pin_memory": torch.cuda.is_available()}
    if workers > 0:
        options.update(persistent_workers=persistent, prefetch_factor=4)
    return options


def build_data(
    cfg: DataConfig,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    splits: DatasetSplits | None = None,
    eval_batch: int = EVAL_BATCH,
    train_masks: bool = False,
) -> DataBundle:
    """PK-sampled training loader (split over DDP ranks) and query / gallery loaders.

    ``train_masks``: training batches also carry the person masks (the ``oracle`` target);
    the dataset must have them (synthetic data). A test split that fits ``CACHE_BYTES`` is
    decoded once per process (``decoded_split``) and its loader reads it from memory.
    """
    splits = splits if splits is not None else load_splits(cfg)
    if train_masks and not all(s.mask_path for s in splits.train):
        raise FTNError(
            f"model.mask=oracle needs ground-truth person masks, which {cfg.dataset} "
            f"does not have; it runs on the synthetic data only"
        )
    prepare = resize_transform(cfg.height, cfg.width)
    train_tf = build_transforms(
        cfg.height, cfg.width, train=True, flip=cfg.flip, pad=cfg.pad, resize=False
    )
    test_tf = build_transforms(cfg.height, cfg.width, train=False, resize=False)

    def fits(samples) -> bool:  # cache decoded, resized images in memory
        return len(samples) * 3 * cfg.height * cfg.width <= CACHE_BYTES

    sampler = PKSampler(
        [s.pid for s in splits.train],
        cfg.num_ids,
        cfg.num_instances,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    train = DataLoader(
        ReIDDataset(splits.train, train_tf, train_masks, prepare, cache=fits(splits.train)),
        batch_sampler=KeyedBatches(sampler),
        **loader_options(cfg.workers),
    )

    def test_loader(samples, with_mask):
        dataset = (
            decoded_split(samples, prepare, with_mask, test_tf, cfg, splits.digest)
            if fits(samples)
            else ReIDDataset(samples, test_tf, with_mask, prepare)
        )
        return DataLoader(
            dataset,
            batch_size=eval_batch,
            shuffle=False,
            **loader_options(cfg.workers, persistent=False),
        )

    # Query masks (synthetic data) feed the foreground-focus score; the gallery needs none.
    query = test_loader(splits.query, with_mask=any(s.mask_path for s in splits.query))
    return DataBundle(
        splits,
        train,
        sampler,
        query,
        test_loader(splits.gallery, with_mask=False),
        BatchAugment(cfg.random_patch, cfg.random_erasing),
    )


def decoded_split(
    samples, prepare, with_mask: bool, transform, cfg: DataConfig, digest: str = ""
) -> DecodedImages:
    """``samples`` decoded and resized at ``cfg``'s input size once per process (at first use):
    the key is the data digest, the size, and each sample's path, mask, identity, camera, and
    file size and modification time (a file edited since is decoded again)."""

    def state(path: str | None) -> tuple[int, int]:
        if path is None:
            return (-1, -1)
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns

    key = (
        digest,
        cfg.height,
        cfg.width,
        with_mask,
        tuple(
            (
                s.path,
                s.mask_path,
                s.pid,
                s.camid,
                state(s.path),
                state(s.mask_path) if with_mask else None,
            )
            for s in samples
        ),
    )
    nbytes = len(samples) * (3 + with_mask) * cfg.height * cfg.width
    decoded = _DECODED.pop(key, (None, 0))[0]
    if decoded is None:
        decoded = DecodedImages(samples, prepare, with_mask, transform, cfg.workers)
    _DECODED[key] = decoded, nbytes  # the most recently used last
    while len(_DECODED) > 1 and sum(n for _, n in _DECODED.values()) > 2 * CACHE_BYTES:
        del _DECODED[next(iter(_DECODED))]
    return decoded


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
