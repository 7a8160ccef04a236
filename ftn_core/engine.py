"""Training engine (paper §3.4, §4.1): warm-up, alternating batches, evaluation.

Knows nothing of MLflow or Optuna: it reports through ``Callbacks``. CPU runs are
deterministic for a seed, and a run resumed from its checkpoint ends as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ftn_core import checkpoint as ckpt
from ftn_core.config import Config
from ftn_core.data.dataset import DecodedImages
from ftn_core.data.loading import DataBundle
from ftn_core.diagnostics import foreground_scores, forward_with_maps
from ftn_core.errors import FTNError
from ftn_core.evaluation import RankResult, evaluate_features
from ftn_core.losses import combine
from ftn_core.model import FTN, build_model

METRIC_SCALE = 100.0  # val/ metrics are logged in percent, as the paper reports them


class Callbacks(Protocol):
    """What the engine tells its caller (the MLflow runner, an Optuna trial, a test)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        """After each evaluation; may raise to stop the run (e.g. an Optuna pruner)."""


class NonFiniteLoss(FTNError):
    """A NaN or inf loss: the run stops as FAILED; the others go on."""


class PrecisionChanged(FTNError):
    """A checkpoint trained in another precision than this machine's: never resumed here (its
    epochs would mix two precisions under one tag); the checkpoint is kept for a machine that
    trains in ``was``."""

    def __init__(self, message: str, was: str) -> None:
        super().__init__(message)
        self.was = was


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during training; the last epoch's checkpoint is kept."""


@dataclass
class TrainResult:
    metrics: dict[str, float]
    """Final ``val/*`` metrics (percent)."""
    cmc: list[float]
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)
    per_query: dict[str, np.ndarray] | None = None
    """The final evaluation's ``PerQuery`` fields (index, ap, first_rank, inp) as arrays."""


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` (the GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``; ``option`` names the
    setting in the error when CUDA is asked for and absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FTNError(f"{option}={name} but CUDA is not available; use {option}=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise FTNError(f"{option}={name}: not a device; use auto, cpu, cuda or cuda:N") from None


def native_bf16_cpu() -> bool:
    """Whether this processor computes bf16 natively (AVX-512 BF16 or AMX tiles): matmuls at up
    to twice the fp32 rate. Elsewhere bf16 is emulated and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def mixed_precision(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype ``train.amp`` gives on ``device``: bf16 on a GPU that has it (fp16 with
    a loss scaler on one that has not) and on a CPU that computes bf16 natively; None (fp32)
    when ``amp`` is off and on other CPUs. The weights, optimizer and evaluation stay fp32."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and native_bf16_cpu():
        return torch.bfloat16
    return None


PRECISION_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while training (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise ``KeyboardInterrupt``: a
    checkpoint and the metrics of its epoch are written together or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def handler(signum, frame):
        caught.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]}")


def extract_features(
    model: FTN,
    loader,
    device: torch.device,
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "features",
    flip: bool = False,
    diagnostics: bool = True,
):
    """Test embeddings, pids, camids and (when masks come and ``diagnostics``) the
    foreground-focus scores, taken from the same forward pass (``forward_with_maps``); ``flip``:
    each embedding is the mean of the image's and its mirror image's (test-time augmentation,
    off in the paper's protocol). A decoded split (``DecodedImages``) is batched from memory."""
    model.eval()
    feats, pids, camids = [], [], []
    focus: dict[str, list[torch.Tensor]] = {}
    dataset = getattr(loader, "dataset", None)
    decoded = isinstance(dataset, DecodedImages) and loader.batch_size
    batches = dataset.batches(loader.batch_size) if decoded else loader
    pooling = (
        channels_last_pooling(model)
        if device.type == "cpu" and not channels_last
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), pooling:
        for batch in tqdm(
            batches, desc=desc, total=len(loader), leave=False, disable=not progress or None
        ):
            img = batch["img"].to(device, non_blocking=True)
            if channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            if diagnostics and "mask" in batch:
                feat, enc, maps = forward_with_maps(model, img)
                for name, score in foreground_scores(model, img, batch["mask"], enc, maps).items():
                    focus.setdefault(name, []).append(score)
            else:
                feat = model(img)
            feat = feat.float()
            if flip:
                feat = (feat + model(img.flip(-1)).float()) / 2
            feats.append(feat.cpu())
            pids.append(batch["pid"])
            camids.append(batch["camid"])
    # Outside inference mode: ordinary tensors for the caller.
    focus_mean = {k: float(torch.cat(v).float().nanmean()) for k, v in focus.items()}
    return torch.cat(feats), torch.cat(pids), torch.cat(camids), focus_mean


@contextlib.contextmanager
def channels_last_pooling(model: nn.Module) -> Iterator[None]:
    """Inside the block, each max pooling of ``model`` runs on a channels-last copy of its input
    and hands back a contiguous output. The CPU's channels-last kernel is about 5× faster (the
    cpu preset's stem: 42 against 8 ms for 128 images), and a maximum is the same number in any
    layout, so every output is the same to the bit."""

    def to_channels_last(module, args):
        if args[0].dim() != 4:
            return None
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])

    handles = []
    for module in model.modules():
        if isinstance(module, nn.MaxPool2d) and not module.return_indices:
            handles += [
                module.register_forward_pre_hook(to_channels_last),
                module.register_forward_hook(lambda module, args, out: out.contiguous()),
            ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def evaluate(
    model: FTN,
    data: DataBundle,
    device: torch.device,
    channels_last: bool = False,
    progress: bool = False,
    flip: bool = False,
) -> tuple[dict[str, float], RankResult]:
    """``val/rank1 … val/mINP`` (percent) and, where the queries have person masks (synthetic
    data), the foreground diagnostics of ``ftn_core.diagnostics`` (``val/fg_focus`` = the global
    branch's raw share, ``val/fg_focus_<map>``, ``val/fg_focus_norm_<map>``, ``val/mask_auc_<mask>``)."""
    qf, qp, qc, focus = extract_features(
        model, data.query_loader, device, channels_last, progress, "query", flip
    )
    gf, gp, gc, _ = extract_features(
        model, data.gallery_loader, device, channels_last, progress, "gallery", flip
    )
    result = evaluate_features(
        qf, gf, qp, gp, qc, gc, device=device if device.type != "cpu" else None
    )
    return _val_metrics(result, focus), result


def _val_metrics(result: RankResult, focus: dict[str, float]) -> dict[str, float]:
    metrics = {f"val/{k}": METRIC_SCALE * v for k, v in result.metrics().items()}
    if focus:  # already in percent
        metrics["val/fg_focus"] = focus["fg_focus_global"]
        metrics.update({f"val/{k}": v for k, v in focus.items()})
    return metrics


def evaluate_reference(
    model: FTN,
    splits,
    height: int,
    width: int,
    device: torch.device,
    batch_size: int = 128,
    keep: dict | None = None,
) -> tuple[dict[str, float], RankResult]:
    """``evaluate`` as it was before the shared decode and the single pass, kept for the tests
    and ``benchmarks/eval_bench.py`` to compare against: each split through a loader that
    decodes every image, ``model(img)`` per ``batch_size`` images under ``no_grad``, and the
    diagnostics from a second encoder pass of each query batch. ``keep``: a dict of the
    caller's in which the loaders' datasets keep their decoded images across calls, as a run's
    own loaders did for its later evaluations."""
    from torch.utils.data import DataLoader

    from ftn_core.data.dataset import ReIDDataset
    from ftn_core.data.transforms import build_transforms, resize_transform

    model.eval()
    parts = []
    for samples in (splits.query, splits.gallery):
        with_mask = samples is splits.query and any(s.mask_path for s in samples)
        test_tf = build_transforms(height, width, train=False, resize=False)
        key = (id(samples), height, width)
        dataset = keep.get(key) if keep is not None else None
        if dataset is None:
            dataset = ReIDDataset(
                samples, test_tf, with_mask, resize_transform(height, width), cache=keep is not None
            )
            if keep is not None:
                keep[key] = dataset
        loader = DataLoader(dataset, batch_size=batch_size)
        feats, pids, camids, focus = [], [], [], {}
        with torch.no_grad():
            for batch in loader:
                img = batch["img"].to(device)
                feats.append(model(img).float().cpu())
                pids.append(batch["pid"])
                camids.append(batch["camid"])
                if "mask" in batch:
                    for name, score in foreground_scores(model, img, batch["mask"]).items():
                        focus.setdefault(name, []).append(score)
        parts.append(
            (
                torch.cat(feats),
                torch.cat(pids),
                torch.cat(camids),
                {k: float(torch.cat(v).float().nanmean()) for k, v in focus.items()},
            )
        )
    (qf, qp, qc, focus), (gf, gp, gc, _) = parts
    on_device = device if device.type != "cpu" else None
    result = evaluate_features(qf, gf, qp, gp, qc, gc, device=on_device)
    return _val_metrics(result, focus), result


SYNC_EVERY = 50
"""On a GPU, batches between host reads of the loss (NaN check and progress bar)."""
COMPILE_BACKEND = "inductor"
"""``torch.compile``'s backend for ``train.compile``; tests use ``aot_eager`` (no C++ build)."""


class Trainer:
    """Trains one configuration: ``Trainer(cfg, data, ckpt_path).fit()``.

    Batches are grouped by three (paper §3.4; its "first two epochs" of a group of three batches
    we read as batches): two Re-ID batches with λ = (w_ce, w_triplet, 0, 0) and one reconstruction
    batch with λ = (0, 0, w_grad, w_l1); ``schedule=joint`` uses all four every batch. During the
    warm-up the backbone is frozen and only Re-ID batches run.
    A model without a decoder uses every batch for Re-ID.
    """

    def __init__(
        self,
        cfg: Config,
        data: DataBundle,
        ckpt_path: str | Path | None = None,
        callbacks: Callbacks | None = None,
        rank: int = 0,
        world_size: int = 1,
        progress: bool | None = None,
    ) -> None:
        self.cfg, self.data, self.callbacks = cfg, data, callbacks
        self.rank, self.world_size = rank, world_size
        self.ckpt_path = Path(ckpt_path) if ckpt_path else None
        self.progress = progress if progress is not None else rank == 0
        t = cfg.train
        self.device = resolve_device(t.device)
        # Batches between reads of the loss: every batch on the CPU (free there, and a NaN is
        # caught before its step), every SYNC_EVERY on a GPU, which then never waits on the host.
        self.sync_every = 1 if self.device.type == "cpu" else SYNC_EVERY
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(t.seed)
        self.model = build_model(cfg.model, data.num_classes, init_seed=t.seed).to(self.device)
        self.channels_last = t.channels_last and cuda
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        dtype = mixed_precision(self.device, t.amp)
        self.precision = PRECISION_NAMES[dtype]
        """What the training steps compute in: bf16, fp16 or fp32 (logged as the run's tag)."""
        self.use_amp = dtype is not None
        self.amp_dtype = dtype or torch.bfloat16  # (autocast is off when not use_amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        # fused: one kernel for the whole step on CUDA instead of a few per parameter group
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=cuda or None
        )
        self.batches_per_epoch = len(data.train_loader)
        if t.max_batches:
            self.batches_per_epoch = min(self.batches_per_epoch, t.max_batches)
        # Stepped every batch: a linear warm-up over ``lr_warmup_epochs``, then ×0.1 at each
        # milestone epoch (with no warm-up, the paper's MultiStepLR exactly) or a cosine decay.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_factor(
                t.lr_warmup_epochs, t.milestones, self.batches_per_epoch, t.lr_decay, t.epochs
            ),
        )
        self.net: nn.Module = self.model
        if world_size > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if cuda else None,
                find_unused_parameters=True,
            )  # Re-ID and reconstruction batches use different parts
        if t.compile != "off":  # one graph per batch kind (reid / recon / joint), compiled lazily
            self.net = torch.compile(self.net, mode=t.compile, backend=COMPILE_BACKEND)
        self.start_epoch = 0
        self.history: list[dict[str, float]] = []
        self.final: dict[str, Any] | None = None

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "precision": self.precision,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.data.sampler.state_dict(),
            "rng": ckpt.rng_state(),
            "augment": [t.state_dict() for t in self._stateful_transforms()],
            "history": self.history,
            "final": self.final,
        }

    def resume(self) -> bool:
        """Continue from the checkpoint if there is one; returns whether it did."""
        if self.ckpt_path is None or not self.ckpt_path.exists():
            return False
        state = ckpt.load(self.ckpt_path)
        was = state.get("precision")  # absent from checkpoints of older code
        if was is not None and was != self.precision:
            if state["final"] is None:
                raise PrecisionChanged(
                    f"its checkpoint trained {state['epoch'] + 1} epoch(s) in {was} and this "
                    f"machine trains in {self.precision} (train.amp={self.cfg.train.amp}): "
                    f"resume it where train.amp gives {was}",
                    was,
                )
            self.precision = was  # trained to the end there: nothing is computed here
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.data.sampler.load_state_dict(state["sampler"])
        ckpt.set_rng_state(state["rng"])
        for t, t_state in zip(self._stateful_transforms(), state.get("augment", [])):
            t.load_state_dict(t_state)
        self.start_epoch = state["epoch"] + 1
        self.history = list(state["history"])
        self.final = state["final"]
        return True

    def _stateful_transforms(self) -> list[Any]:
        """Augmentations with state of their own (RandomPatch's pool, in the main process with
        any number of workers): saved with the checkpoint, so a resumed run is exact."""
        patch = getattr(self.data.train_augment, "random_patch", None)
        return [patch] if patch is not None else []

    def _save(self, epoch: int) -> None:
        if self.ckpt_path is not None and self.rank == 0:
            ckpt.save_atomic(self.state_dict(epoch), self.ckpt_path)

    # ------------------------------------------------------------------ training
    def _batch_kind(self, epoch: int, i: int) -> str:
        """reid | recon | joint, or skip: the reconstruction slot of a model without TF-Dec
        under ``matched_updates`` (the ``base_matched`` control)."""
        t = self.cfg.train
        if epoch < t.warmup_epochs or t.schedule == "joint" and self.model.decoder is None:
            return "reid"
        if t.schedule == "joint":
            return "joint"
        if i % 3 != 2:
            return "reid"
        if self.model.decoder is not None:
            return "recon"
        return "skip" if t.matched_updates else "reid"

    def _weights(self, kind: str) -> dict[str, float]:
        w = self.cfg.loss
        reid = {"ce": w.w_ce, "triplet": w.w_triplet}
        recon = {"grad": w.w_grad if self.cfg.model.gradient_loss else 0.0, "l1": w.w_l1}
        return {"reid": reid, "recon": recon, "joint": {**reid, **recon}}[kind]

    def _set_warmup(self, frozen: bool) -> None:
        for p in self.model.parameter_groups()["backbone"]:
            p.requires_grad_(not frozen)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch; the loss terms stay on the device and are read every ``sync_every``
        batches (finiteness, progress bar) and once at the end (the epoch's means)."""
        t = self.cfg.train
        self.model.train()
        self._set_warmup(epoch < t.warmup_epochs)
        self.data.sampler.set_epoch(epoch)
        n_batches = self.batches_per_epoch
        losses = _LossSums(epoch)
        encoder = self.model.encoder_parameters()
        grad_norms: dict[str, list[torch.Tensor]] = {"reid": [], "recon": []}
        images, start = 0, time.perf_counter()
        bar = tqdm(
            total=n_batches,
            desc=f"epoch {epoch + 1}/{t.epochs}",
            leave=False,
            disable=not self.progress or None,
            dynamic_ncols=True,
        )
        augment = self.data.train_augment
        for i, batch in enumerate(self.data.train_loader):
            if i >= n_batches:
                break
            if augment is not None:  # every batch, skipped ones too: the patch pool sees them all
                batch["img"] = augment(
                    batch["img"], (t.seed, epoch, self.rank + i * self.world_size)
                )
            kind = self._batch_kind(epoch, i)
            if kind == "skip":  # the slot a TF-Dec variant spends on reconstruction
                self.scheduler.step()
                bar.update()
                continue
            img = batch["img"].to(self.device, non_blocking=True)
            if self.channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            pids = batch["pid"].to(self.device, non_blocking=True)
            fg_mask = None
            if kind != "reid" and self.cfg.model.mask == "oracle":
                if "mask" not in batch:
                    raise FTNError(
                        "model.mask=oracle needs ground-truth person masks in the "
                        "training batches (synthetic data only)"
                    )
                fg_mask = batch["mask"].to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                out = self.net(img, reid=kind != "recon", recon=kind != "reid", fg_mask=fg_mask)
            terms = self.model.losses(
                out,
                pids,
                self.cfg.loss.margin,
                self.cfg.loss.label_smooth,
                gradient=self.cfg.model.gradient_loss,
                recon_reduction=self.cfg.loss.recon_reduction,
            )
            loss = combine(terms, self._weights(kind))
            losses.add(i, terms, loss)
            last = i + 1 == n_batches
            if (i + 1) % self.sync_every == 0 or last:  # read before this batch's step
                latest = losses.check(self.world_size > 1)  # one host synchronisation
                bar.set_postfix(
                    loss=f"{latest:.3f}",
                    lr=f"{self.scheduler.get_last_lr()[0]:.1e}",
                    img_s=f"{images / (time.perf_counter() - start):.0f}",
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if kind in grad_norms and encoder[0].grad is not None:  # not while it is frozen
                if self.scaler.is_enabled():
                    self.scaler.unscale_(self.optimizer)  # step() does not unscale again
                grad_norms[kind].append(_grad_norm(encoder))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            images += img.shape[0] * self.world_size
            bar.update()
        bar.close()
        losses.check(self.world_size > 1)
        elapsed = time.perf_counter() - start
        stats = {f"train/loss_{k}": v for k, v in losses.means().items()}
        stats["train/lr"] = self.optimizer.param_groups[0]["lr"]
        stats["train/img_per_s"] = images / max(elapsed, 1e-9)
        stats["train/epoch_seconds"] = elapsed
        # nanmean: a step the fp16 scaler skips has an infinite norm and does not count
        norms = {k: torch.stack(v) for k, v in grad_norms.items() if v}
        means = {
            k: torch.where(x.isfinite(), x, math.nan).nanmean().item() for k, x in norms.items()
        }
        for k, v in means.items():
            stats[f"train/grad_norm_{k}"] = v
        if "reid" in means and "recon" in means:
            # How hard a reconstruction batch pushes stages 1–4 relative to a Re-ID batch.
            stats["train/recon_grad_ratio"] = means["recon"] / max(means["reid"], 1e-30)
        return stats

    def _evaluate(self) -> tuple[dict[str, float], RankResult | None]:
        result = None
        metrics: dict[str, float] = {}
        if self.rank == 0:
            metrics, result = evaluate(
                self.model, self.data, self.device, self.channels_last, self.progress
            )
        if self.world_size > 1:
            dist.barrier()
        return metrics, result

    def fit(self) -> TrainResult:
        """Train from the checkpoint (or scratch) to the last epoch; evaluate every k epochs."""
        t = self.cfg.train
        self.resume()
        if self.final is not None:  # finished earlier: nothing to train again
            return self._result()
        result: RankResult | None = None
        metrics: dict[str, float] = {}
        done = self.start_epoch  # epochs whose checkpoint and metrics are written
        try:
            with sigterm_as_interrupt():
                for epoch in range(self.start_epoch, t.epochs):
                    stats = self.train_epoch(epoch)
                    last = epoch == t.epochs - 1
                    if last or (t.eval_every and (epoch + 1) % t.eval_every == 0):
                        metrics, result = self._evaluate()
                        stats.update(metrics)
                    # Metrics, then the checkpoint, with Ctrl-C held in between. A hard kill
                    # between the two re-trains this epoch on resume (exactly, on the CPU); the
                    # logger skips steps it already logged, so each epoch is logged once.
                    with deferred_interrupts():
                        if self.callbacks is not None and self.rank == 0:
                            self.callbacks.log_metrics(stats, step=epoch + 1)
                        self.history.append({"epoch": epoch + 1, **stats})
                        if last and result is not None:
                            self.final = {
                                "metrics": metrics,
                                "cmc": [float(c) for c in result.cmc],
                                "per_query": _per_query_tensors(result),
                            }
                        self._save(epoch)
                        done = epoch + 1
                    if (
                        self.callbacks is not None
                        and self.rank == 0
                        and metrics
                        and "val/mAP" in stats
                    ):
                        self.callbacks.on_eval(epoch + 1, metrics)
        except KeyboardInterrupt:
            kept = f"epoch {done}" if done > 0 else "none"
            raise Interrupted(
                f"interrupted during epoch {done + 1}; checkpoint of the last "
                f"finished epoch ({kept}) kept at {self.ckpt_path}"
            ) from None
        assert self.final is not None or self.rank != 0
        return self._result()

    def _result(self) -> TrainResult:
        final = self.final or {"metrics": {}, "cmc": []}
        per_query = final.get("per_query")
        return TrainResult(
            final["metrics"],
            final["cmc"],
            self.cfg.train.epochs,
            self.history,
            {k: v.numpy() for k, v in per_query.items()} if per_query else None,
        )


def _per_query_tensors(result: RankResult) -> dict[str, torch.Tensor] | None:
    """``result.per_query`` as tensors: a checkpoint loaded with ``weights_only`` holds them."""
    if result.per_query is None:
        return None
    return {k: torch.from_numpy(np.asarray(v)) for k, v in result.per_query._asdict().items()}


def lr_factor(
    warmup_epochs: int,
    milestones: tuple[int, ...],
    batches_per_epoch: int,
    decay: str = "step",
    epochs: int = 0,
):
    """The lr multiplier at batch ``it`` (0-based, counted over the whole run): linear from
    1/W to 1 over the W = ``warmup_epochs · batches_per_epoch`` first batches; then
    ``step``: × 0.1 for each milestone epoch reached; ``cosine``: ½(1 + cos πt) with t going
    from 0 after the warm-up to 1 at the last of the ``epochs · batches_per_epoch`` batches."""
    warm = warmup_epochs * batches_per_epoch
    per_epoch = max(batches_per_epoch, 1)
    decaying = max(epochs * batches_per_epoch - warm - 1, 1)

    def factor(it: int) -> float:
        if warm and it < warm:
            return (it + 1) / warm
        if decay == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (it - warm) / decaying)))
        return 0.1 ** sum(it // per_epoch >= m for m in milestones)

    return factor


def _grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """The L2 norm of the parameters' gradients, as a tensor (no host synchronisation)."""
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).float()


class _LossSums:
    """An epoch's loss terms, summed on the device in float64 (exact for float32 values of
    similar size, so the order of summation does not matter) and read only when asked.

    ``add`` keeps the batches since the last ``check``; ``check`` reads them in one
    synchronisation and raises ``NonFiniteLoss`` naming the first batch whose loss is not finite.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.sums: dict[tuple[str, ...], torch.Tensor] = {}  # term names + "total" → (T+1,)
        self.counts: dict[tuple[str, ...], int] = {}
        self.pending: list[tuple[int, tuple[str, ...], torch.Tensor]] = []

    def add(self, batch: int, terms: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        names = (*terms, "total")
        values = torch.stack([v.detach().float() for v in (*terms.values(), loss)])
        values = values.double() if values.device.type != "mps" else values  # MPS has no float64
        self.sums[names] = self.sums[names] + values if names in self.sums else values
        self.counts[names] = self.counts.get(names, 0) + 1
        self.pending.append((batch, names, values))

    def check(self, distributed: bool = False) -> float:
        """The latest batch's loss; raises if any batch since the last check was not finite.

        ``distributed``: every rank checks at the same batches (they run the same number), and a
        non-finite loss on any rank stops them all here, with the reason, instead of the others
        going on into the next gradient all-reduce and waiting there for a rank that has gone.
        """
        if not self.pending:
            return float("nan")
        rows = torch.stack([v[-1] for _, _, v in self.pending])
        finite = torch.isfinite(rows).all()
        if distributed:  # every rank learns of a NaN anywhere before any of them leaves
            everywhere = finite.to(torch.int32)
            dist.all_reduce(everywhere, op=dist.ReduceOp.MIN)
        if not bool(finite):
            for batch, names, values in self.pending:
                if not math.isfinite(float(values[-1])):
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(names[:-1], values.tolist()))
                    raise NonFiniteLoss(
                        f"non-finite loss at epoch {self.epoch + 1}, batch "
                        f"{batch + 1} ({shown}); lower train.lr or check the data"
                    )
        if distributed and not bool(everywhere):
            first, last = self.pending[0][0] + 1, self.pending[-1][0] + 1
            raise NonFiniteLoss(
                f"non-finite loss on another rank at epoch {self.epoch + 1}, "
                f"batches {first}–{last} (that rank's error names it); lower "
                "train.lr or check the data"
            )
        latest = float(rows[-1])
        self.pending.clear()
        return latest

    def means(self) -> dict[str, float]:
        """Per term kind (``ce/global`` + ``ce/local`` → ``ce``): the mean over the batches that
        had it of the per-batch sum over branches; a non-finite mean is NaN."""
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        for names, summed in self.sums.items():
            per_kind: dict[str, float] = {}
            for name, value in zip(names, summed.tolist()):
                kind = name.split("/")[0]
                per_kind[kind] = per_kind.get(kind, 0.0) + value
            for kind, value in per_kind.items():
                totals[kind] = totals.get(kind, 0.0) + value
                counts[kind] = counts.get(kind, 0) + self.counts[names]
        return {k: v / counts[k] if math.isfinite(v) else float("nan") for k, v in totals.items()}
