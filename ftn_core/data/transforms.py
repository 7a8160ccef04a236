"""Augmentation (paper §4.1): resize, horizontal flip, pad + random crop, random patch, erasing.

Two stages. Per image (``build_transforms``, in the loader's workers): resize, flip, pad +
crop, to float. Per training batch (``BatchAugment``, in the main process): random patch, then
erasing, image by image in batch order. Random patch pastes pieces of *earlier* images, so its
pool is state; kept in the main process, it sees the same images in the same order whatever
the number of workers, and is saved with the checkpoint.

Every random draw is keyed (``ftn_core.seeding``): an image's by (seed, epoch, position in
the epoch), a batch's by (seed, epoch, batch), so two variants of one seed see the same
augmented pixels, with any number of workers.

Contract: the pipeline returns the UN-normalised float image in [0, 1], shape (3, H, W). It
is TF-Dec's reconstruction target; the model normalises its own input with
``IMAGENET_MEAN`` / ``IMAGENET_STD``. A foreground mask passed as ``tv_tensors.Mask``
follows every geometric transform (flip, pad, crop) and is never touched by erasing or
random patch, which only change pixels.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ftn_core.seeding import seeded

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _is_plain_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and not isinstance(x, tv_tensors.TVTensor)


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand(1).item()


def _randint(high: int) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,)).item())


class RandomPatch(v2.Transform):
    """Paste a patch cut from an earlier image (the Random Patch idea of Zhou & Xiang's torchreid).

    Every call cuts one random box of the current image into a FIFO pool; once the pool
    holds ``min_pool`` patches, with probability ``p`` a random pool patch (mirrored with
    probability ``flip``) is pasted at a random position, imitating occlusion by other
    people and objects. Box area is a ``area`` fraction of the image, aspect ratio (h/w)
    log-uniform in ``ratio``. Our interpretation: no patch rotation. Images only; masks pass
    through unchanged. Uses torch's global RNG, so ``torch.manual_seed`` makes it repeatable.
    """

    _transformed_types = (tv_tensors.Image, _is_plain_tensor)

    def __init__(
        self,
        p: float = 0.5,
        pool_size: int = 1000,
        min_pool: int = 100,
        area: tuple[float, float] = (0.01, 0.5),
        ratio: tuple[float, float] = (0.1, 10.0),
        flip: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.min_pool = max(1, min_pool)
        self.area = area
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.flip = flip
        self.pool: deque[torch.Tensor] = deque(maxlen=pool_size)

    def state_dict(self) -> dict[str, Any]:
        """The patch pool: training state, saved in checkpoints so a resumed run is exact."""
        return {"pool": list(self.pool)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool.clear()
        self.pool.extend(state["pool"])

    def _box_size(self, h: int, w: int) -> tuple[int, int] | None:
        for _ in range(10):
            box_area = h * w * _uniform(*self.area)
            aspect = math.exp(_uniform(*self.log_ratio))
            ph, pw = round(math.sqrt(box_area * aspect)), round(math.sqrt(box_area / aspect))
            if 0 < ph < h and 0 < pw < w:
                return ph, pw
        return None

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        img = flat_inputs[0]  # (C, H, W); masks are not among the transformed inputs
        h, w = img.shape[-2:]
        size = self._box_size(h, w)
        if size is not None:
            ph, pw = size
            i, j = _randint(h - ph + 1), _randint(w - pw + 1)
            self.pool.append(img[..., i : i + ph, j : j + pw].as_subclass(torch.Tensor).clone())
        if len(self.pool) < self.min_pool or torch.rand(1).item() >= self.p:
            return {"paste": None}
        patch = self.pool[_randint(len(self.pool))]
        if torch.rand(1).item() < self.flip:
            patch = patch.flip(-1)
        ph, pw = patch.shape[-2:]
        if ph > h or pw > w:  # pool filled from images of another size
            return {"paste": None}
        return {"paste": (patch, _randint(h - ph + 1), _randint(w - pw + 1))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["paste"] is None:
            return inpt
        patch, i, j = params["paste"]
        out = inpt.as_subclass(torch.Tensor).clone()
        out[..., i : i + patch.shape[-2], j : j + patch.shape[-1]] = patch.to(out.dtype)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class _ImageErasing(v2.RandomErasing):
    """``v2.RandomErasing`` that leaves masks alone silently (the base warns on each Mask)."""

    _transformed_types = (tv_tensors.Image, _is_plain_tensor)


def resize_transform(height: int, width: int) -> v2.Compose:
    """uint8/PIL (3, h, w) [+ Mask] → uint8 (3, H, W): the deterministic start of every
    pipeline (what ``ReIDDataset`` may cache)."""
    return v2.Compose([v2.ToImage(), v2.Resize((height, width), antialias=True)])


def build_transforms(
    height: int, width: int, train: bool, flip: float = 0.5, pad: int = 10, resize: bool = True
) -> v2.Compose:
    """The per-image train or test pipeline: uint8/PIL (3, h, w) [+ Mask] → float (3, H, W)
    in [0, 1]; resize, then (train) flip and pad + random crop. ``resize=False``: the input is
    already ``resize_transform``'s output. Random patch and erasing are ``BatchAugment``'s.

    Call as ``t(img)`` or ``t(img, mask)`` with ``tv_tensors.Image`` / ``tv_tensors.Mask``.
    """
    steps: list[v2.Transform] = [*resize_transform(height, width).transforms] if resize else []
    if train:
        if flip > 0:
            steps.append(v2.RandomHorizontalFlip(flip))
        if pad > 0:
            steps += [v2.Pad(pad, fill=0), v2.RandomCrop((height, width))]
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    return v2.Compose(steps)


class BatchAugment:
    """Random patch, then erasing, on each image of a training batch in order (main process).

    ``batch(imgs, key)``: ``imgs`` float (B, 3, H, W) in [0, 1] → a new tensor; every draw is
    keyed by ``key`` (seed, epoch, batch). Erasing (Zhong et al., area 2–40 %, aspect 0.3–3.3)
    fills with the ImageNet mean colour, which the model's normalisation maps to 0. Either step
    is off at probability 0. ``random_patch`` holds the pool (``state_dict``).
    """

    def __init__(self, random_patch: float = 0.5, random_erasing: float = 0.5) -> None:
        self.random_patch = RandomPatch(p=random_patch) if random_patch > 0 else None
        self.erasing = (
            _ImageErasing(
                p=random_erasing, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=list(IMAGENET_MEAN)
            )
            if random_erasing > 0
            else None
        )

    def __call__(self, imgs: torch.Tensor, key: tuple) -> torch.Tensor:
        if self.random_patch is None and self.erasing is None:
            return imgs
        out = []
        with seeded("augment", *key):
            for img in imgs:
                if self.random_patch is not None:
                    img = self.random_patch(img)
                if self.erasing is not None:
                    img = self.erasing(img)
                out.append(img)
        return torch.stack(out)
