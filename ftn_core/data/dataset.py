"""The torch Dataset over reader samples: decode, augment, and carry pid / camera / mask."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from ftn_core.data.types import Sample
from ftn_core.errors import FTNError
from ftn_core.seeding import seeded


def read_image(path: str, mode: ImageReadMode = ImageReadMode.RGB) -> torch.Tensor:
    """Decode a JPEG/PNG to uint8 (C, H, W); an unreadable file raises ``FTNError`` naming it."""
    try:
        # torchvision 0.29 marks its decoders deprecated (for TorchCodec), but they are ~1.6x
        # faster than PIL here (benchmarks/data_bench.py): silence that notice only.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(path, mode=mode)
    except (RuntimeError, OSError, ValueError) as err:
        raise FTNError(
            f"cannot decode image {path} ({str(err).splitlines()[0]}); fix or delete "
            f"it, or re-read the dataset with --skip-bad-images"
        ) from None


class ReIDDataset(Dataset):
    """Samples → ``{"img", "pid", "camid", "index"[, "mask"]}``.

    ``img``: float (3, H, W) in [0, 1], un-normalised (the reconstruction target);
    ``mask``: float (1, H, W) in {0, 1}, present when ``with_mask`` and the sample has one,
    transformed jointly with the image. ``transform`` is a ``build_transforms`` pipeline; None
    only converts to float. ``prepare`` (deterministic, e.g. ``resize_transform``) runs first;
    with ``cache`` its output is kept in memory, so each file is decoded and resized once per
    process.

    An item is an index, or ``(index, key)``: then the transform's random draws are keyed by
    ``key`` (``ftn_core.seeding``), the same in any process and whatever was drawn before.
    """

    def __init__(
        self,
        samples: list[Sample],
        transform: Callable[..., Any] | None,
        with_mask: bool = False,
        prepare: Callable[..., Any] | None = None,
        cache: bool = False,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.with_mask = with_mask
        self.prepare = prepare
        self.cache: dict[int, tuple[Any, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask | None]:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        s = self.samples[index]
        img = tv_tensors.Image(read_image(s.path))  # uint8 (3, h, w)
        mask = None
        if self.with_mask and s.mask_path is not None:
            mask = tv_tensors.Mask(read_image(s.mask_path, ImageReadMode.GRAY))  # uint8 (1, h, w)
        if self.prepare is not None:
            img, mask = self.prepare(img, mask) if mask is not None else (self.prepare(img), None)
        if self.cache is not None:
            self.cache[index] = img, mask
        return img, mask

    def __getitem__(self, item: int | tuple[int, tuple]) -> dict[str, Any]:
        index, key = item if isinstance(item, tuple) else (item, None)
        img, mask = self._load(index)
        if self.transform is not None:
            with seeded("augment", *key) if key is not None else contextlib.nullcontext():
                if mask is not None:
                    img, mask = self.transform(img, mask)
                else:
                    img = self.transform(img)
        if img.dtype == torch.uint8:
            img = img.float() / 255.0
        s = self.samples[index]
        item = {
            "img": img.as_subclass(torch.Tensor),
            "pid": s.pid,
            "camid": s.camid,
            "index": index,
        }
        if mask is not None:
            item["mask"] = (mask.as_subclass(torch.Tensor) > 127).float()  # (1, H, W)
        return item


class DecodedImages(Dataset):
    """A test split decoded and resized once (at first use), held as one uint8 tensor.

    ``img``: uint8 (N, 3, H, W), ``prepare``'s output for each sample, read and decoded as
    ``ReIDDataset`` does (with ``workers`` loader processes); ``mask``: bool (N, 1, H, W)
    (person = mask > 127) or None. Items are ``ReIDDataset``'s with the same ``transform`` (the
    test pipeline: no random draw); ``batches`` gives the batches a ``DataLoader`` over those
    items would, with no per-item work.
    """

    def __init__(
        self,
        samples: list[Sample],
        prepare: Callable[..., Any],
        with_mask: bool,
        transform: Callable[..., Any] | None,
        workers: int = 0,
    ) -> None:
        self.samples, self.transform = samples, transform
        self._source = ReIDDataset(samples, None, with_mask, prepare)
        self._workers = workers
        self._tensors: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.pids = torch.tensor([s.pid for s in samples], dtype=torch.long)
        self.camids = torch.tensor([s.camid for s in samples], dtype=torch.long)

    def _decode(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._tensors is None:
            loader = DataLoader(
                _Prepared(self._source),
                batch_size=256,
                num_workers=self._workers,
                collate_fn=_stack,
            )
            imgs, masks = [], []
            for img, mask in loader:
                imgs.append(img)
                masks.append(mask)
            img = torch.cat(imgs) if imgs else torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
            has_mask = self._source.with_mask and bool(masks) and all(m is not None for m in masks)
            self._tensors = img, torch.cat(masks) if has_mask else None
        return self._tensors

    @property
    def img(self) -> torch.Tensor:
        return self._decode()[0]

    @property
    def mask(self) -> torch.Tensor | None:
        return self._decode()[1]

    def __len__(self) -> int:
        return len(self.samples)

    def _item(self, img: torch.Tensor, index: slice | int) -> dict[str, Any]:
        if self.transform is not None:
            img = self.transform(tv_tensors.Image(img))
        if img.dtype == torch.uint8:
            img = img.float() / 255.0
        out = {
            "img": img.as_subclass(torch.Tensor),
            "pid": self.pids[index],
            "camid": self.camids[index],
        }
        if self.mask is not None:
            out["mask"] = self.mask[index].float()  # (…, 1, H, W) in {0, 1}
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._item(self.img[index], index)
        return {**item, "pid": int(item["pid"]), "camid": int(item["camid"]), "index": index}

    def batches(self, size: int) -> Iterator[dict[str, Any]]:
        """``{"img", "pid", "camid"[, "mask"]}`` for samples [0, size), [size, 2·size), …"""
        for start in range(0, len(self), size):
            part = slice(start, start + size)
            yield self._item(self.img[part], part)


class _Prepared(Dataset):
    """``ReIDDataset``'s decoded and prepared image and mask, uint8 (mask: bool, > 127)."""

    def __init__(self, dataset: ReIDDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        img, mask = self.dataset._load(index)
        return (
            img.as_subclass(torch.Tensor),
            None if mask is None else mask.as_subclass(torch.Tensor) > 127,
        )


def _stack(items: list[tuple[torch.Tensor, torch.Tensor | None]]):
    imgs, masks = zip(*items)
    return torch.stack(imgs), None if any(m is None for m in masks) else torch.stack(masks)
