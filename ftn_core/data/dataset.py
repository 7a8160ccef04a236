"""The torch Dataset over reader samples: decode, augment, and carry pid / camera / mask."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable

import torch
from torch.utils.data import Dataset
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
        raise FTNError(f"cannot decode image {path} ({str(err).splitlines()[0]}); fix or delete "
                       f"it, or re-read the dataset with --skip-bad-images") from None


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

    def __init__(self, samples: list[Sample], transform: Callable[..., Any] | None,
                 with_mask: bool = False, prepare: Callable[..., Any] | None = None,
                 cache: bool = False) -> None:
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
        item = {"img": img.as_subclass(torch.Tensor), "pid": s.pid, "camid": s.camid,
                "index": index}
        if mask is not None:
            item["mask"] = (mask.as_subclass(torch.Tensor) > 127).float()  # (1, H, W)
        return item
