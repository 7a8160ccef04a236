"""Training engine: the batch schedule, determinism, exact resume, NaN stop, DDP on CPU."""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ftn_core import engine
from ftn_core.config import override
from ftn_core.data.loading import build_data
from ftn_core.engine import Interrupted, NonFiniteLoss, Trainer, lr_factor
from ftn_core.errors import FTNError


class Recorder:
    def __init__(self):
        self.logged, self.evals = [], []

    def log_metrics(self, metrics, step):
        self.logged.append((step, dict(metrics)))

    def on_eval(self, epoch, metrics):
        self.evals.append(epoch)


def _fit(cfg, ckpt=None, callbacks=None):
    data = build_data(cfg.data, seed=cfg.train.seed)
    trainer = Trainer(cfg, data, ckpt, callbacks, progress=False)
    return trainer, trainer.fit()


def test_alternating_schedule_and_warmup(tiny_cfg):
    cfg = override(tiny_cfg, {"train.epochs": 2, "train.warmup_epochs": 1, "train.max_batches": 6})
    data = build_data(cfg.data)
    trainer = Trainer(cfg, data, progress=False)
    assert [trainer._batch_kind(0, i) for i in range(6)] == ["reid"] * 6  # warm-up
    assert [trainer._batch_kind(1, i) for i in range(6)] == ["reid", "reid", "recon"] * 2
    assert trainer._weights("reid") == {"ce": 1.0, "triplet": 0.1}
    assert trainer._weights("recon") == {"grad": 1.0, "l1": 1.0}
    joint = Trainer(override(cfg, {"train.schedule": "joint"}), data, progress=False)
    assert joint._batch_kind(1, 2) == "joint"
    no_grad = Trainer(override(cfg, {"model.gradient_loss": False}), data, progress=False)
    assert no_grad._weights("recon") == {"grad": 0.0, "l1": 1.0}
    base = Trainer(
        override(cfg, {"model.decoder": False, "model.attention": "none"}), data, progress=False
    )
    assert base._batch_kind(1, 2) == "reid"  # no decoder: every batch trains Re-ID
    # Warm-up freezes the backbone: its weights do not move during epoch 1, the heads do.
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_epoch(0)
    after = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert torch.equal(before["senc.stage2.0.conv1.weight"], after["senc.stage2.0.conv1.weight"])
    assert not torch.equal(
        before["heads.global.embed.0.weight"], after["heads.global.embed.0.weight"]
    )
    assert torch.equal(before["decoder.head.weight"], after["decoder.head.weight"])
    trainer.train_epoch(1)
    after2 = trainer.model.state_dict()
    assert not torch.equal(
        after["senc.stage2.0.conv1.weight"], after2["senc.stage2.0.conv1.weight"]
    )
    assert not torch.equal(after["decoder.head.weight"], after2["decoder.head.weight"])


def test_same_seed_same_metrics_and_logged_names(tiny_cfg):
    rec = Recorder()
    _, first = _fit(tiny_cfg, callbacks=rec)
    _, second = _fit(tiny_cfg)
    assert first.metrics == second.metrics and first.cmc == second.cmc
    assert [s for s, _ in rec.logged] == [1, 2] and rec.evals == [1, 2]
    names = set(rec.logged[-1][1])
    assert {
        "train/loss_ce",
        "train/loss_triplet",
        "train/loss_grad",
        "train/loss_l1",
        "train/loss_total",
        "train/lr",
        "train/img_per_s",
        "val/rank1",
        "val/rank5",
        "val/rank10",
        "val/mAP",
        "val/mINP",
        "val/fg_focus",
    } <= names
    m = first.metrics
    assert 0 <= m["val/mAP"] <= 100 and 0 <= m["val/fg_focus"] <= 100 and len(first.cmc) == 50
    _, other = _fit(override(tiny_cfg, {"train.seed": 1}))
    assert other.metrics != first.metrics


def test_diagnostics_are_the_queries_and_can_be_skipped(tiny_cfg, monkeypatch):
    """The foreground diagnostics run on the query images only (the gallery loader carries no
    masks), from the maps of the embedding's own forward pass; a caller that discards them (the
    re-ranked evaluation) skips them with ``diagnostics=False``."""
    data = build_data(tiny_cfg.data, seed=0)
    model = Trainer(tiny_cfg, data, progress=False).model
    seen = []
    original = engine.foreground_scores

    def counted(m, img, masks, enc=None, maps=None):
        assert enc is not None and maps is not None  # no second encoder pass
        seen.append(img.shape[0])
        return original(m, img, masks, enc, maps)

    monkeypatch.setattr(engine, "foreground_scores", counted)
    metrics, _ = engine.evaluate(model, data, torch.device("cpu"))
    assert sum(seen) == len(data.splits.query) and len(data.splits.gallery) > 0
    seen.clear()
    feats, _, _, focus = engine.extract_features(
        model, data.query_loader, torch.device("cpu"), diagnostics=False
    )
    assert seen == [] and focus == {} and feats.shape[0] == len(data.splits.query)
    _, _, _, focus = engine.extract_features(model, data.query_loader, torch.device("cpu"))
    assert metrics["val/fg_focus"] == focus["fg_focus_global"]


@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_run_resumes_to_the_same_result(tiny_cfg, tmp_path, monkeypatch, workers):
    # Enough images per epoch that RandomPatch's pool (100 patches) fills during epoch 2:
    # its state must be in the checkpoint too (it lives in the main process, whatever the workers).
    cfg = override(
        tiny_cfg,
        {
            "train.epochs": 3,
            "train.max_batches": 8,
            "data.random_patch": 1.0,
            "data.workers": workers,
        },
    )
    _, reference = _fit(cfg, tmp_path / "ref.pt")
    ckpt = tmp_path / "run.pt"
    original = Trainer.train_epoch

    def interrupted_epoch(self, epoch):
        if epoch == 1:  # Ctrl-C in the middle of the second epoch
            batches = iter(self.data.train_loader)
            next(batches)
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_epoch)
    with pytest.raises(Interrupted, match="checkpoint of the last finished epoch"):
        _fit(cfg, ckpt)
    assert ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] == 0
    monkeypatch.setattr(Trainer, "train_epoch", original)
    trainer, resumed = _fit(cfg, ckpt)
    assert trainer.start_epoch == 1
    assert resumed.metrics == reference.metrics and resumed.cmc == reference.cmc
    # A finished checkpoint returns its result without training again.
    monkeypatch.setattr(Trainer, "train_epoch", lambda *a: pytest.fail("trained again"))
    _, again = _fit(cfg, ckpt)
    assert again.metrics == reference.metrics


def test_non_finite_loss_stops_with_a_clear_message(tiny_cfg):
    cfg = override(tiny_cfg, {"loss.margin": float("nan")})
    with pytest.raises(
        NonFiniteLoss, match=r"non-finite loss at epoch 1, batch 1 \(.*triplet/global=nan"
    ):
        _fit(cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    engine.COMPILE_BACKEND = "aot_eager"  # a spawned process imports the engine afresh
    try:
        data = build_data(cfg.data, seed=cfg.train.seed, rank=rank, world_size=world)
        trainer = Trainer(cfg, data, None, None, rank=rank, world_size=world, progress=False)
        trainer.fit()
        flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        out[rank] = (
            flat.sum().item(),
            flat.abs().sum().item(),
            len(data.train_loader),
            type(trainer.net).__name__,
        )
    finally:
        dist.destroy_process_group()


def _ddp_nan_worker(rank: int, world: int, port: int, cfg, out: dict) -> None:
    """Rank 1 alone gets a NaN loss (its triplet margin); both ranks must stop with a reason."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    try:
        if rank == 1:
            cfg = override(cfg, {"loss.margin": float("nan")})
        data = build_data(cfg.data, seed=cfg.train.seed, rank=rank, world_size=world)
        trainer = Trainer(cfg, data, None, None, rank=rank, world_size=world, progress=False)
        try:
            trainer.fit()
            out[rank] = "finished"
        except NonFiniteLoss as e:
            out[rank] = str(e)
        except Exception as e:  # noqa: BLE001 - a lost peer, reported for the assertion
            out[rank] = f"{type(e).__name__}: {e}"
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_a_nan_on_one_rank_stops_every_rank_with_its_reason(tiny_cfg):
    cfg = override(tiny_cfg, {"train.epochs": 1, "train.max_batches": 3, "train.eval_every": 0})
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_ddp_nan_worker, args=(2, _free_port(), cfg, out), nprocs=2, join=True)
        results = dict(out)
    assert (
        results[1].startswith("non-finite loss at epoch 1, batch 1 (")
        and "triplet/global=nan" in results[1]
    )
    assert results[0].startswith("non-finite loss on another rank at epoch 1, batches 1–1")


@pytest.mark.slow
@pytest.mark.parametrize("compile_mode", ["off", "default"])
def test_ddp_two_cpu_processes_agree(tiny_cfg, compile_mode):
    """Also compiled: DDP's bucketed all-reduce inside the compiled graphs, and the recompile
    when the backbone unfreezes after the warm-up."""
    cfg = override(
        tiny_cfg,
        {
            "train.epochs": 2,
            "train.warmup_epochs": 1,
            "train.max_batches": 3,
            "train.eval_every": 0,
            "train.compile": compile_mode,
        },
    )
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2))
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, out), nprocs=2, join=True)
        results = dict(out)
    assert set(results) == {0, 1}
    assert results[0] == results[1]  # identical weights on both ranks after warm-up and alternation
    assert results[0][3] == (
        "OptimizedModule" if compile_mode != "off" else "DistributedDataParallel"
    )


def test_recon_grad_ratio_is_logged_finite_and_positive(tiny_cfg):
    rec = Recorder()
    cfg = override(tiny_cfg, {"train.max_batches": 6})
    _fit(cfg, callbacks=rec)
    first, second = (m for _, m in rec.logged)
    assert "train/recon_grad_ratio" not in first  # warm-up: frozen encoder, Re-ID batches only
    ratio = second["train/recon_grad_ratio"]
    assert math.isfinite(ratio) and ratio > 0
    assert ratio == pytest.approx(second["train/grad_norm_recon"] / second["train/grad_norm_reid"])
    # Eq. 2's per-image sum gives the reconstruction far more weight than the element mean.
    rec_mean = Recorder()
    _fit(override(cfg, {"loss.recon_reduction": "mean"}), callbacks=rec_mean)
    assert rec_mean.logged[1][1]["train/recon_grad_ratio"] < ratio / 10
    base = Recorder()
    _fit(override(cfg, {"model.decoder": False, "model.attention": "none"}), callbacks=base)
    assert "train/recon_grad_ratio" not in base.logged[1][1]


def test_base_matched_skips_the_reconstruction_slot(tiny_cfg):
    cfg = override(
        tiny_cfg,
        {
            "model.decoder": False,
            "model.attention": "none",
            "train.max_batches": 6,
            "train.matched_updates": True,
        },
    )
    data = build_data(cfg.data)
    trainer = Trainer(cfg, data, progress=False)
    assert [trainer._batch_kind(0, i) for i in range(6)] == ["reid"] * 6  # warm-up: all Re-ID
    assert [trainer._batch_kind(1, i) for i in range(6)] == ["reid", "reid", "skip"] * 2
    steps = []
    trainer.optimizer.register_step_post_hook(lambda *a: steps.append(1))
    trainer.train_epoch(1)
    assert len(steps) == 4  # exactly the Re-ID updates a TF-Dec variant gets in 6 batches
    assert trainer.scheduler.last_epoch == 6  # the lr schedule still counts every batch


def test_lr_warmup_then_milestones():
    f = lr_factor(warmup_epochs=1, milestones=(2, 3), batches_per_epoch=4)
    assert [f(i) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear, per batch
    assert [f(i) for i in (4, 7, 8, 11, 12)] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    paper = lr_factor(0, (150, 240), batches_per_epoch=10)  # no warm-up: MultiStepLR per epoch
    assert [paper(i) for i in (0, 1499, 1500, 2400)] == pytest.approx([1.0, 1.0, 0.1, 0.01])


def test_oracle_trains_on_masked_batches_and_needs_masks(tiny_cfg):
    cfg = override(tiny_cfg, {"model.mask": "oracle"})
    _, result = _fit_masks(cfg, True)
    assert math.isfinite(result.metrics["val/mAP"])
    with pytest.raises(FTNError, match="needs ground-truth person masks"):
        _fit_masks(cfg, False)


def _fit_masks(cfg, train_masks):
    data = build_data(cfg.data, seed=cfg.train.seed, train_masks=train_masks)
    trainer = Trainer(cfg, data, progress=False)
    return trainer, trainer.fit()


def _preloaded(cfg, n: int):
    """The data bundle of ``cfg`` with its first training batch repeated ``n`` times, already in
    memory: the loop then runs only engine, model, losses and optimizer code (the batch
    augmentation, which reads CPU tensors before the batch goes to the device, is left out)."""
    data = build_data(cfg.data, seed=cfg.train.seed)
    first = next(iter(data.train_loader))
    return dataclasses.replace(data, train_loader=[first] * n, train_augment=None)


def _host_reads_from_ftn_core(monkeypatch) -> list[str]:
    """Record each Tensor → Python read (a host synchronisation on a GPU) made by ftn_core code."""
    import inspect

    calls: list[str] = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name):
            caller = inspect.currentframe().f_back.f_code.co_filename
            if "ftn_core" in caller:
                calls.append(f"{_name} {caller}")
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def test_training_reads_the_loss_once_per_sync_interval_not_once_per_batch(tiny_cfg, monkeypatch):
    cfg = override(tiny_cfg, {"train.max_batches": 0})
    counts = {}
    for n in (15, 30):
        trainer = Trainer(cfg, _preloaded(cfg, n), progress=False)
        trainer.sync_every = 5
        calls = _host_reads_from_ftn_core(monkeypatch)
        trainer.train_epoch(1)
        monkeypatch.undo()
        counts[n] = len(calls)
    # 15 more batches add three checks of two reads each: nothing per batch.
    assert counts[30] - counts[15] == 6, counts


def _watched(cfg, batches: int, sync_every: int, watch):
    """A trainer on ``batches`` preloaded batches whose loss terms pass through
    ``watch(terms, call)`` (call = 1, 2, …) before the engine sees them."""
    trainer = Trainer(cfg, _preloaded(cfg, batches), progress=False)
    trainer.sync_every = sync_every
    losses, calls = trainer.model.losses, []

    def watched(*args, **kwargs):
        calls.append(1)
        terms = losses(*args, **kwargs)
        watch(terms, len(calls))
        return terms

    trainer.model.losses = watched
    return trainer, calls


def test_non_finite_loss_is_located_between_sync_points(tiny_cfg):
    def poison(terms, call):
        if call == 7:  # batch 7 of 12: found at the check of batch 10
            terms["ce/global"] = terms["ce/global"] * float("inf")

    trainer, calls = _watched(override(tiny_cfg, {"train.max_batches": 0}), 12, 5, poison)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at epoch 2, batch 7 \(ce/global=inf"):
        trainer.train_epoch(1)
    assert len(calls) == 10  # stopped at the first check after it, before batch 10's step


def test_epoch_means_are_the_per_batch_means_of_the_summed_branches(tiny_cfg):
    per_batch = []
    trainer, _ = _watched(
        override(tiny_cfg, {"train.max_batches": 0}),
        6,
        4,
        lambda terms, call: per_batch.append({k: float(v.detach()) for k, v in terms.items()}),
    )
    stats = trainer.train_epoch(1)  # after the warm-up: reid, reid, recon, reid, reid, recon
    ce = [
        sum(v for k, v in b.items() if k.startswith("ce/")) for b in per_batch if "ce/global" in b
    ]
    grad = [b["grad"] for b in per_batch if "grad" in b]
    assert len(ce) == 4 and len(grad) == 2
    assert stats["train/loss_ce"] == pytest.approx(sum(ce) / 4, rel=1e-12)
    assert stats["train/loss_grad"] == pytest.approx(sum(grad) / 2, rel=1e-12)


def test_compiled_training_matches_eager_and_checkpoints_the_plain_model(tiny_cfg, monkeypatch):
    import ftn_core.engine as engine

    monkeypatch.setattr(engine, "COMPILE_BACKEND", "aot_eager")  # the graph path, no C++ build
    # fp32: on a CPU with native bf16, autocast's rounding alone would part the two by ~0.1 %.
    cfg = override(tiny_cfg, {"train.max_batches": 0, "train.amp": False})
    data = _preloaded(cfg, 3)
    eager = Trainer(cfg, data, progress=False)
    compiled = Trainer(override(cfg, {"train.compile": "default"}), data, progress=False)
    assert type(compiled.net).__name__ == "OptimizedModule" and compiled.net is not compiled.model
    a, b = eager.train_epoch(1), compiled.train_epoch(1)  # reid, reid, recon: two graphs
    for key in ("train/loss_ce", "train/loss_triplet", "train/loss_grad", "train/loss_l1"):
        assert b[key] == pytest.approx(a[key], rel=1e-3), key  # decompositions round differently
    assert list(compiled.state_dict(1)["model"]) == list(eager.state_dict(1)["model"])
    from ftn_core.config import config_hash

    assert config_hash(override(cfg, {"train.compile": "max-autotune"})) == config_hash(cfg)


def test_loaders_keep_their_workers_and_prefetch_only_with_workers(tiny_cfg):
    with_workers = build_data(override(tiny_cfg, {"data.workers": 2}).data)
    train, query = with_workers.train_loader, with_workers.query_loader
    assert train.num_workers == 2 and train.persistent_workers and train.prefetch_factor == 4
    assert query.num_workers == 2 and not query.persistent_workers  # read once per evaluation
    assert train.pin_memory == torch.cuda.is_available()
    plain = build_data(tiny_cfg.data).train_loader
    assert plain.num_workers == 0 and not plain.persistent_workers and plain.prefetch_factor is None


def test_mixed_precision_follows_the_device_and_the_processor(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(engine, "native_bf16_cpu", lambda: False)
    assert engine.mixed_precision(cpu, True) is None  # emulated bf16 would be slower than fp32
    monkeypatch.setattr(engine, "native_bf16_cpu", lambda: True)
    assert engine.mixed_precision(cpu, True) is torch.bfloat16
    assert engine.mixed_precision(cpu, False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert engine.mixed_precision(torch.device("cuda"), True) is torch.float16  # with a scaler


def test_bf16_training_on_a_cpu_keeps_fp32_weights_and_fp32_losses(tiny_cfg, monkeypatch):
    """With native bf16 (forced here, so any CPU runs it), the forward pass runs in bf16 and
    everything the optimizer and the losses see stays fp32."""
    monkeypatch.setattr(engine, "native_bf16_cpu", lambda: True)
    cfg = override(tiny_cfg, {"train.epochs": 1, "train.warmup_epochs": 0, "train.milestones": ()})
    data = build_data(cfg.data, seed=0)
    trainer = Trainer(cfg, data, progress=False)
    assert trainer.precision == "bf16" and not trainer.scaler.is_enabled()
    seen = {}
    forward = trainer.model.forward

    def spy(*args, **kwargs):
        out = forward(*args, **kwargs)
        for feat in out.feats.values():  # (a reconstruction batch has none)
            seen.setdefault("feat", feat.dtype)
        return out

    monkeypatch.setattr(trainer.model, "forward", spy)
    terms = []
    real_losses = trainer.model.losses
    monkeypatch.setattr(
        trainer.model, "losses", lambda *a, **k: terms.append(real_losses(*a, **k)) or terms[-1]
    )
    stats = trainer.train_epoch(0)
    assert seen["feat"] == torch.bfloat16
    assert all(v.dtype == torch.float32 for t in terms for v in t.values())
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert math.isfinite(stats["train/loss_total"])
    fp32 = Trainer(override(cfg, {"train.amp": False}), data, progress=False)
    assert fp32.precision == "fp32"
