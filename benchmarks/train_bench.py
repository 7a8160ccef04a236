"""Training and inference speed per preset, and the engine's overhead against a bare loop.

  python benchmarks/train_bench.py [--presets tiny cpu paper] [--batches 6]
  python benchmarks/train_bench.py --device cuda --presets paper --batches 60 --compile off default

For each preset, Baseline and FTN (g): training img/s of the engine's ``train_epoch`` and of a
bare loop doing the same forward / losses / backward / Adam step on the same batches (already
on the device, so neither pays for loading; ``benchmarks/data_bench.py`` measures the loader),
the engine's overhead over the bare loop (aim: ≤ 5 %), inference img/s, and on CUDA the peak
GPU memory. On CUDA both loops use bf16 autocast and channels_last as training does, and are
timed to the end of the GPU's work; ``--compile`` repeats the measurement with
``torch.compile`` (``train.compile``) in each mode given.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

import torch

from ftn_core.config import override
from ftn_core.data.loading import DataBundle
from ftn_core.data.types import DatasetSplits, Sample
from ftn_core.engine import COMPILE_BACKEND, Trainer
from ftn_core.losses import combine
from ftn_core.model import build_model
from ftn_core.presets import preset_config

NUM_CLASSES = 150
VARIANTS = (("Baseline", {"model.attention": "none", "model.decoder": False}), ("FTN", {}))


def _batches(cfg, n: int, device: str = "cpu") -> list[dict[str, torch.Tensor]]:
    d = cfg.data
    bsz = d.num_ids * d.num_instances
    g = torch.Generator().manual_seed(0)
    return [
        {
            "img": torch.rand(bsz, 3, d.height, d.width, generator=g).to(device),
            "pid": torch.arange(d.num_ids).repeat_interleave(d.num_instances).to(device),
        }
        for _ in range(n)
    ]


class _Sampler:
    def set_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> dict:
        return {}


def _bundle(batches) -> DataBundle:
    splits = DatasetSplits(
        "bench", "", [Sample("", i % NUM_CLASSES, 0) for i in range(NUM_CLASSES)]
    )
    return DataBundle(splits, batches, _Sampler(), [], [])  # type: ignore[arg-type]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(device: str, fn) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def engine_seconds(cfg, batches) -> float:
    trainer = Trainer(cfg, _bundle(batches), progress=False)
    epoch = cfg.train.warmup_epochs  # the first epoch that trains the whole model
    trainer.train_epoch(epoch)  # warm-up: allocator, cuDNN algorithms, compilation
    return _timed(trainer.device.type, lambda: trainer.train_epoch(epoch))


def bare_seconds(cfg, batches) -> float:
    """The same work without the engine: forward, losses, backward, Adam step; one read of the
    loss at the end."""
    device = batches[0]["img"].device.type
    cuda = device == "cuda"
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, NUM_CLASSES).to(device).train()
    fmt = torch.channels_last if cuda and cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = (
        model
        if cfg.train.compile == "off"
        else torch.compile(model, mode=cfg.train.compile, backend=COMPILE_BACKEND)
    )
    opt = torch.optim.Adam(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=cuda or None
    )  # as the engine
    reid, recon = {"ce": 1.0, "triplet": 0.1}, {"grad": 1.0, "l1": 1.0}

    def epoch() -> None:
        total = torch.zeros((), device=device)
        for i, b in enumerate(batches):
            kind_recon = model.decoder is not None and i % 3 == 2
            with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda and cfg.train.amp):
                out = net(
                    b["img"].contiguous(memory_format=fmt), reid=not kind_recon, recon=kind_recon
                )
            loss = combine(model.losses(out, b["pid"]), recon if kind_recon else reid)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        total.item()

    epoch()
    return _timed(device, epoch)


def inference_img_s(cfg, batches) -> float:
    device = batches[0]["img"].device.type
    cuda = device == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = build_model(cfg.model, NUM_CLASSES).to(device, memory_format=fmt).eval()
    imgs = [b["img"].contiguous(memory_format=fmt) for b in batches]

    def run() -> None:
        for img in imgs:
            model(img)

    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
        run()
        return sum(len(i) for i in imgs) / _timed(device, run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--presets", nargs="+", help="default: tiny cpu paper (CPU), paper gpu (CUDA)"
    )
    parser.add_argument(
        "--batches",
        type=int,
        help="batches per measurement, a multiple of 3 "
        "(default: 6 on the CPU, 3 for paper there; 60 on CUDA)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="engine/bare pairs (median reported)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=[v for v, _ in VARIANTS],
        choices=[v for v, _ in VARIANTS],
        help="default: Baseline FTN",
    )
    parser.add_argument(
        "--engine-only",
        action="store_true",
        help="skip the bare loop (with --compile: one compilation instead of two)",
    )
    parser.add_argument(
        "--compile",
        nargs="+",
        default=["off"],
        choices=["off", "default", "reduce-overhead", "max-autotune"],
        help="train.compile modes to measure (default: off)",
    )
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    presets = args.presets or (["paper", "gpu"] if cuda else ["tiny", "cpu", "paper"])
    where = (
        f"CUDA {torch.cuda.get_device_name()}, bf16 autocast, channels_last"
        if cuda
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"torch {torch.__version__}, {where}")
    print(
        f"{'preset':<7} {'model':<9} {'compile':<15} {'input':<9} {'batch':>5} {'engine img/s':>13} "
        f"{'bare img/s':>11} {'overhead':>9} {'infer img/s':>12} {'peak GiB':>9}"
    )
    for preset in presets:
        cfg = preset_config(
            preset, {"train.device": args.device, "model.pretrained": False, "train.max_batches": 0}
        )
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, warmup_epochs=0))
        n = args.batches or (60 if cuda else 3 if preset == "paper" else 6)
        batches = _batches(cfg, n, args.device)
        images = sum(len(b["img"]) for b in batches)
        for mode in args.compile:
            for label, changes in VARIANTS:
                if label not in args.models:
                    continue
                c = override(cfg, {**changes, "train.compile": mode})
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                repeats = args.repeats if (cuda or preset != "paper") else 1
                pairs = [
                    (
                        engine_seconds(c, batches),
                        math.nan if args.engine_only else bare_seconds(c, batches),
                    )
                    for _ in range(repeats)
                ]
                engine = statistics.median(e for e, _ in pairs)
                bare = statistics.median(b for _, b in pairs)
                overhead = statistics.median(e / b - 1 for e, b in pairs)
                infer = inference_img_s(c, batches)
                peak = f"{torch.cuda.max_memory_allocated() / 2**30:9.2f}" if cuda else f"{'-':>9}"
                size = f"{cfg.data.height}x{cfg.data.width}"
                print(
                    f"{preset:<7} {label:<9} {mode:<15} {size:<9} {len(batches[0]['img']):>5} "
                    f"{images / engine:>13.1f} {images / bare:>11.1f} {100 * overhead:>+8.1f}% "
                    f"{infer:>12.1f} {peak}",
                    flush=True,
                )
    print(
        f"overhead: median over {args.repeats} engine/bare pairs of engine time / bare time − 1 "
        f"(one pair for paper on the CPU)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
