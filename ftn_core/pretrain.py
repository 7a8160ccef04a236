"""Pre-training S-Enc as an image classifier (formula-driven images: ``data/fractal.py``).

The backbone + global average pooling + one linear layer, cross-entropy with label smoothing,
Adam with a linear warm-up and a cosine decay (the cpu preset's recipe), flip and pad-and-crop.
Like the engine it knows nothing of MLflow (it reports through ``engine.Callbacks``), saves a
checkpoint every epoch and, resumed from one, ends as an uninterrupted run would (on the CPU):
every random draw is keyed by (seed, epoch, batch).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ftn_core import checkpoint as ckpt
from ftn_core.backbone import SEnc
from ftn_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ftn_core.engine import (
    Callbacks,
    Interrupted,
    NonFiniteLoss,
    deferred_interrupts,
    lr_factor,
    sigterm_as_interrupt,
)
from ftn_core.errors import FTNError
from ftn_core.init import backbone_state
from ftn_core.seeding import derive_seed, seeded


class Classifier(nn.Module):
    """S-Enc (stages 1–5) → GAP → Linear: img (B, 3, H, W) in [0, 1] → logits (B, classes)."""

    def __init__(
        self, classes: int, arch: str, last_stride: int, stage4_stride: int, seed: int
    ) -> None:
        super().__init__()
        with seeded("init", seed, "senc"):  # as FTN draws its S-Enc for this seed
            self.senc = SEnc(arch, last_stride=last_stride, stage4_stride=stage4_stride)
        with seeded("init", seed, "pretrain-head"):
            self.head = nn.Linear(self.senc.stage5_channels, classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, img: Tensor) -> Tensor:
        s = self.senc
        x = (img - self.mean) / self.std
        feat = s.stage5(s.stage4(s.stage3(s.stage2(s.stage1(x)))))  # (B, C5, h, w)
        return self.head(feat.mean(dim=(2, 3)))


def augment(img: Tensor, pad: int, key: tuple) -> Tensor:
    """Flip half the images and crop each at a random offset of its zero-padded copy:
    (B, 3, H, W) → (B, 3, H, W); the draws depend on ``key`` only."""
    g = torch.Generator().manual_seed(derive_seed("pretrain-augment", *key))
    B, _, H, W = img.shape
    flip = torch.rand(B, generator=g) < 0.5
    img = torch.where(flip[:, None, None, None], img.flip(-1), img)
    padded = nn.functional.pad(img, (pad, pad, pad, pad))  # (B, 3, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=g).tolist()
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=g).tolist()
    return torch.stack([padded[i, :, y : y + H, x : x + W] for i, (y, x) in enumerate(zip(dy, dx))])


def split_holdout(
    labels: np.ndarray, instances: int, share: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and held-out images of a category-major set: the last
    ``share`` of each category's instances (at least one) are held out."""
    held = max(1, round(instances * share)) if instances > 1 else 0
    pos = np.arange(len(labels)) % instances
    return np.flatnonzero(pos < instances - held), np.flatnonzero(pos >= instances - held)


class ClassifierTrainer:
    """``ClassifierTrainer(images, labels, ...).fit()``: images (N, H, W, 3) uint8, labels (N,)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        instances: int,
        *,
        arch: str,
        last_stride: int,
        stage4_stride: int,
        epochs: int,
        batch_size: int = 128,
        lr: float = 2e-3,
        weight_decay: float = 5e-4,
        label_smooth: float = 0.1,
        warmup_epochs: int = 1,
        pad: int = 4,
        seed: int = 0,
        device: str = "cpu",
        ckpt_path: str | Path | None = None,
        callbacks: Callbacks | None = None,
        progress: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.train_idx, self.val_idx = split_holdout(labels, instances)
        self.epochs, self.batch_size, self.pad, self.seed = epochs, batch_size, pad, seed
        self.label_smooth, self.callbacks, self.progress = label_smooth, callbacks, progress
        self.ckpt_path = Path(ckpt_path) if ckpt_path else None
        torch.manual_seed(seed)
        classes = int(labels.max()) + 1
        self.model = Classifier(classes, arch, last_stride, stage4_stride, seed).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        self.batches = len(self.train_idx) // batch_size  # the remainder of each epoch is dropped
        if self.batches < 1:
            raise FTNError(
                f"{len(self.train_idx)} training images do not fill one batch of "
                f"{batch_size}; use more categories or instances, or a smaller batch"
            )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(warmup_epochs, (), self.batches, "cosine", epochs)
        )
        self.start_epoch = 0
        self.history: list[dict[str, float]] = []

    def _batch(self, idx: np.ndarray) -> tuple[Tensor, Tensor]:
        img = self.data[torch.from_numpy(idx)].float().div_(255)
        return img.to(self.device), self.labels[torch.from_numpy(idx)].to(self.device)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        order = np.random.default_rng([self.seed, 5, epoch]).permutation(self.train_idx)
        loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
        bar = tqdm(
            total=self.batches,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            leave=False,
            disable=not self.progress or None,
            dynamic_ncols=True,
        )
        for i in range(self.batches):
            img, y = self._batch(order[i * self.batch_size : (i + 1) * self.batch_size])
            img = augment(img.cpu(), self.pad, (self.seed, epoch, i)).to(self.device)
            logits = self.model(img)
            loss = nn.functional.cross_entropy(logits, y, label_smoothing=self.label_smooth)
            if not torch.isfinite(loss.detach()):
                raise NonFiniteLoss(
                    f"non-finite loss at epoch {epoch + 1}, batch {i + 1}; lower --lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / seen:.2f}")
            bar.update()
        bar.close()
        elapsed = time.perf_counter() - start
        return {
            "train/loss": loss_sum / seen,
            "train/acc": 100.0 * correct / seen,
            "train/lr": self.optimizer.param_groups[0]["lr"],
            "train/img_per_s": seen / elapsed,
            "train/epoch_seconds": elapsed,
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Accuracy (percent) and loss on the held-out instances."""
        self.model.eval()
        correct, loss_sum = 0, 0.0
        for i in range(0, len(self.val_idx), 512):
            img, y = self._batch(self.val_idx[i : i + 512])
            logits = self.model(img)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        n = max(len(self.val_idx), 1)
        return {"val/acc": 100.0 * correct / n, "val/loss": loss_sum / n}

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
        }

    def resume(self) -> bool:
        if self.ckpt_path is None or not self.ckpt_path.exists():
            return False
        state = ckpt.load(self.ckpt_path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch, self.history = state["epoch"] + 1, list(state["history"])
        return True

    def fit(self) -> list[dict[str, float]]:
        """Train from the checkpoint (or the start) to the last epoch; returns the history."""
        self.resume()
        done = self.start_epoch
        try:
            with sigterm_as_interrupt():
                for epoch in range(self.start_epoch, self.epochs):
                    stats = self.train_epoch(epoch)
                    stats.update(self.evaluate() if len(self.val_idx) else {})
                    with deferred_interrupts():  # metrics and checkpoint together or not at all
                        if self.callbacks is not None:
                            self.callbacks.log_metrics(stats, step=epoch + 1)
                        self.history.append({"epoch": epoch + 1, **stats})
                        if self.ckpt_path is not None:
                            ckpt.save_atomic(self.state_dict(epoch), self.ckpt_path)
                        done = epoch + 1
                    if self.callbacks is not None:
                        self.callbacks.on_eval(epoch + 1, stats)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted during epoch {done + 1}; checkpoint of epoch {done} "
                f"kept at {self.ckpt_path}"
            ) from None
        return self.history

    def backbone(self) -> dict[str, Tensor]:
        """The trained S-Enc in the weights-file format (no local block: it was not trained)."""
        return backbone_state(self.model.senc, local_block=False)
