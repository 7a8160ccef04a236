"""One training step per model and batch kind, in fp32 and bf16: time, GFLOP/s and the share of
this machine's own matmul peak (the model FLOP utilisation, MFU).

  python benchmarks/step_bench.py                    # cpu preset, this machine's threads
  python benchmarks/step_bench.py --preset cpu --steps 15 --channels-last

A step is what the engine does per batch: forward (under bf16 autocast for the bf16 column),
the losses in fp32, backward and an Adam step, on one batch of the preset's size already in
memory. FLOPs come from ``torch.utils.flop_counter`` (forward and backward). The peak is a
2048 × 2048 matmul in each precision on the same threads, so any machine shows its own headroom.
Where the processor has no native bf16 (``ftn_core.engine.native_bf16_cpu``), bf16 is emulated
(25x slower than fp32 on an AVX2 machine) and training stays in fp32 (``train.amp`` does not use
it there): the bf16 columns are left out unless ``--bf16`` asks for them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ftn_core.config import override
from ftn_core.engine import native_bf16_cpu
from ftn_core.losses import combine
from ftn_core.model import build_model
from ftn_core.presets import preset_config

NUM_CLASSES = 600
MODELS = (
    ("Baseline", {"model.attention": "none", "model.decoder": False}),
    ("+ CFA", {"model.decoder": False}),
    ("FTN (g)", {}),
)
KINDS = {"reid": (True, False), "recon": (False, True), "joint": (True, True)}
WEIGHTS = {
    "reid": {"ce": 1.0, "triplet": 1.0},
    "recon": {"grad": 0.03, "l1": 0.03},
    "joint": {"ce": 1.0, "triplet": 1.0, "grad": 0.03, "l1": 0.03},
}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 7) -> float:
    """GFLOP/s of an n × n matmul in ``dtype`` (median of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def step_fn(cfg, kind: str, bf16: bool, channels_last: bool):
    """A closure running one training step of ``kind`` on a fixed batch."""
    torch.manual_seed(0)
    model = build_model(cfg.model, NUM_CLASSES).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    d = cfg.data
    img = torch.rand(d.num_ids * d.num_instances, 3, d.height, d.width).contiguous(
        memory_format=fmt
    )
    pids = torch.arange(d.num_ids).repeat_interleave(d.num_instances)
    reid, recon = KINDS[kind]

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(img, reid=reid, recon=recon)
        loss = combine(model.losses(out, pids), WEIGHTS[kind])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def median_ms(step, steps: int) -> float:
    step()
    step()  # warm-up: allocator, oneDNN primitives
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def flops(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--preset", default="cpu", help="preset whose model and batch are measured (default: cpu)"
    )
    parser.add_argument(
        "--steps", type=int, default=9, help="timed steps per cell (median; default: 9)"
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="also measure channels_last (fp32 and bf16)"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="measure bf16 even where it is emulated (slow)"
    )
    args = parser.parse_args(argv)
    cfg = preset_config(args.preset, {"train.device": "cpu", "model.pretrained": False})
    native = native_bf16_cpu()
    bf16 = native or args.bf16
    peak = {"fp32": matmul_peak(torch.float32)}
    if bf16:
        peak["bf16"] = matmul_peak(torch.bfloat16, n=2048 if native else 512)
    print(
        f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: "
        f"{'yes' if native else 'no (emulated; training uses fp32 here)'}"
    )
    print(
        f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s"
        + (
            f", bf16 {peak['bf16']:.0f} GFLOP/s (bf16 / fp32 = {peak['bf16'] / peak['fp32']:.2f})"
            if bf16
            else "; bf16 not measured (--bf16 to measure it emulated)"
        )
    )
    d = cfg.data
    print(
        f"preset {args.preset}: {cfg.model.backbone}, batch {d.num_ids * d.num_instances} at {d.height}x{d.width}; "
        f"ms per step (median of {args.steps}), GFLOP/s and MFU = share of the matmul peak in that precision"
    )
    columns = [("fp32", False, False)] + ([("bf16", True, False)] if bf16 else [])
    if args.channels_last:
        columns += [("fp32 cl", False, True)] + ([("bf16 cl", True, True)] if bf16 else [])
    print(
        f"{'model':<9} {'batch':<6} {'GFLOP':>6} "
        + " ".join(f"{name:>24}" for name, _, _ in columns)
        + (f" {'bf16 speed-up':>13}" if bf16 else "")
    )
    for label, changes in MODELS:
        c = override(cfg, changes)
        kinds = ["reid"] + (["recon", "joint"] if c.model.decoder else [])
        for kind in kinds:
            gflop = flops(step_fn(c, kind, False, False)) / 1e9
            cells, ms = [], {}
            for name, bf16, cl in columns:
                ms[name] = median_ms(step_fn(c, kind, bf16, cl), args.steps)
                rate = gflop / ms[name] * 1000
                mfu = 100 * rate / peak["bf16" if bf16 else "fp32"]
                cells.append(f"{ms[name]:7.1f} ms {rate:5.0f} GF/s {mfu:3.0f}%")
            print(
                f"{label:<9} {kind:<6} {gflop:>6.1f} "
                + " ".join(f"{x:>24}" for x in cells)
                + (f" {ms['fp32'] / ms['bf16']:>12.2f}x" if bf16 else ""),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
