"""Cost figures behind the paper's efficiency claim (§4.2): parameters, MACs, FLOPs, latency.

``python -m ftn_core.cost`` prints the table. MACs count the multiply-accumulates of
convolutions and linear layers only (the paper's convention: CFA = 0.168 G); FLOPs are the
full count of ``torch.utils.flop_counter`` (2 per multiply-accumulate, matmuls included).
"""

from __future__ import annotations

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ftn_core.attention import CFA, PAMCAM
from ftn_core.config import ModelConfig
from ftn_core.decoder import TFDec
from ftn_core.engine import resolve_device
from ftn_core.errors import OneLineParser, cli_main, int_at_least
from ftn_core.model import FTN, build_model

PAPER_CFA_PARAMS = 1.3e6
PAPER_CFA_GMAC = 0.168
PAPER_CFA_SAVING = 0.834


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_linear_macs(module: nn.Module, *inputs) -> int:
    """Multiply-accumulates of every Conv2d and Linear in one forward pass (whole batch)."""
    total = 0

    def hook(mod: nn.Module, args, out) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() * k
        else:  # nn.Linear
            total += out.numel() * mod.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def full_flops(module: nn.Module, *inputs) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops()


@dataclass
class CostRow:
    name: str
    params: int
    gmac: float
    gflops: float


def measure(name: str, module: nn.Module, x: torch.Tensor, per: int = 1) -> CostRow:
    """Cost of ``module(x)`` divided by ``per`` (the batch size) to give per-image figures.

    Parameters count what the pass can use: an FTN in eval mode leaves out its decoder.
    """
    params = count_params(module)
    if isinstance(module, FTN) and not module.training and module.decoder is not None:
        params -= count_params(module.decoder)
    return CostRow(
        name, params, conv_linear_macs(module, x) / per / 1e9, full_flops(module, x) / per / 1e9
    )


def latency(model: nn.Module, x: torch.Tensor, runs: int = 5, warmup: int = 1) -> float:
    """Median seconds of one eval-mode forward pass (on CUDA: bf16 autocast, timed to the end
    of the GPU's work)."""
    model.eval()
    cuda = x.device.type == "cuda"
    times = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        for i in range(warmup + runs):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


LATENCY_BATCH = 8
LATENCY_RUNS = 5


def variant_cost(model: FTN, height: int, width: int) -> dict[str, float]:
    """Per-image cost of a trained model at its input size, as a report's efficiency table gives
    it: parameters at inference (no TF-Dec, no classifiers) and in training, MACs (conv + fc),
    full FLOPs, and CPU latency (eval mode, batch ``LATENCY_BATCH``, median of ``LATENCY_RUNS``
    passes, on the threads torch has). The model is put in eval mode and left there."""
    model = model.eval()
    total = count_params(model)
    decoder = count_params(model.decoder) if model.decoder is not None else 0
    classifiers = sum(count_params(h.classifier) for h in model.heads.values())
    one = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    batch = torch.rand(LATENCY_BATCH, 3, height, width, generator=torch.Generator().manual_seed(1))
    times = [latency(model, batch, runs=1, warmup=1 if i == 0 else 0) for i in range(LATENCY_RUNS)]
    return {
        "params_inference": total - decoder - classifiers,
        "params_training": total,
        "gmac": conv_linear_macs(model, one) / 1e9,
        "gflops": full_flops(model, one) / 1e9,
        "latency_ms": 1e3 * statistics.median(times) / LATENCY_BATCH,
        "latency_batch": LATENCY_BATCH,
        "latency_runs": LATENCY_RUNS,
        "threads": torch.get_num_threads(),
    }


def attention_costs(channels: int = 1024, height: int = 16, width: int = 8) -> dict[str, dict]:
    """CFA and PAM-CAM at the paper's setting (C = 1024 on a 16×8 map): parameters and MACs."""
    torch.manual_seed(0)
    feat = torch.randn(1, channels, height, width)
    out = {}
    for name, module in (("CFA", CFA(channels)), ("PAM-CAM", PAMCAM(channels))):
        row = measure(name, module.eval(), feat)
        out[name] = {"params": row.params, "gmac": row.gmac}
    return out


def cost_table(
    height: int = 256, width: int = 128, backbone: str = "resnet50", num_classes: int = 751
) -> list[CostRow]:
    torch.manual_seed(0)
    c4 = 1024 if backbone == "resnet50" else 256
    feat = torch.randn(1, c4, height // 16, width // 16)
    rows = [
        measure(f"CFA (C={c4}, {height // 16}×{width // 16})", CFA(c4).eval(), feat),
        measure(f"PAM-CAM (C={c4}, {height // 16}×{width // 16})", PAMCAM(c4).eval(), feat),
        measure(f"TF-Dec (width 64, → {height}×{width})", TFDec(c4, 64).eval(), feat),
    ]
    img = torch.rand(2, 3, height, width)
    full = ModelConfig(backbone=backbone)
    for label, cfg in (
        ("Baseline", ModelConfig(backbone=backbone, attention="none", decoder=False)),
        ("FTN", full),
    ):
        model = build_model(cfg, num_classes)
        rows.append(
            measure(f"{label} inference ({backbone}, {height}×{width})", model.eval(), img, per=2)
        )
        # Training: everything but the optimiser runs, the decoder included (BN in train mode).
        rows.append(measure(f"{label} training forward", model.train(), img, per=2))
    return rows


def format_table(rows: list[CostRow]) -> str:
    lines = [f"{'module':<44} {'params (M)':>11} {'MAC conv+fc (G)':>16} {'FLOPs full (G)':>15}"]
    for r in rows:
        lines.append(f"{r.name:<44} {r.params / 1e6:>11.3f} {r.gmac:>16.3f} {r.gflops:>15.3f}")
    return "\n".join(lines)


def latency_ratio(
    batch: int = 16,
    height: int = 256,
    width: int = 128,
    runs: int = 5,
    backbone: str = "resnet50",
    device: str = "cpu",
    compile_mode: str = "off",
) -> tuple[float, float]:
    """Median inference seconds of Baseline and FTN (TF-Dec is never run at inference); on
    CUDA in bf16 with channels_last, as training runs; ``compile_mode``: ``torch.compile`` both
    (``reduce-overhead``: CUDA graphs, no launch overhead)."""
    torch.manual_seed(0)
    dev = torch.device(device)
    fmt = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    x = torch.rand(batch, 3, height, width, device=dev).contiguous(memory_format=fmt)
    base = build_model(ModelConfig(backbone=backbone, attention="none", decoder=False), 751)
    ftn: FTN = build_model(ModelConfig(backbone=backbone), 751)
    base, ftn = (m.to(dev, memory_format=fmt).eval() for m in (base, ftn))
    if compile_mode != "off":
        base, ftn = (torch.compile(m, mode=compile_mode) for m in (base, ftn))
    warm = 10 if dev.type == "cuda" else 1  # cuDNN picks its algorithms on the first calls
    latency(base, x, runs=1, warmup=warm)
    latency(ftn, x, runs=1, warmup=warm)
    t_base, t_ftn = [], []
    for _ in range(runs):  # interleave so drift of the machine hits both alike
        t_base.append(latency(base, x, runs=1, warmup=0))
        t_ftn.append(latency(ftn, x, runs=1, warmup=0))
    return statistics.median(t_base), statistics.median(t_ftn)


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m ftn_core.cost",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m ftn_core.cost                       # the paper's setting, 256x128\n"
        "  python -m ftn_core.cost --backbone resnet10 --height 64 --width 32 --no-latency",
    )
    parser.add_argument(
        "--backbone", default="resnet50", choices=["resnet10", "resnet18", "resnet34", "resnet50"]
    )
    parser.add_argument(
        "--height", type=int_at_least(32), default=256, help="input height (default: 256)"
    )
    parser.add_argument(
        "--width", type=int_at_least(16), default=128, help="input width (default: 128)"
    )
    parser.add_argument(
        "--batch", type=int_at_least(1), default=16, help="batch of the latency measurement"
    )
    parser.add_argument(
        "--runs", type=int_at_least(1), default=5, help="latency runs (median is reported)"
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the latency is measured (cuda: bf16, channels_last)",
    )
    parser.add_argument(
        "--compile",
        default="off",
        choices=["off", "default", "reduce-overhead", "max-autotune"],
        help="torch.compile both models for the latency measurement (default: off)",
    )
    args = parser.parse_args(argv)
    if not args.no_latency:  # before the table: a missing GPU is told at once, not after it
        device = resolve_device(args.device, "--device")
    rows = cost_table(args.height, args.width, args.backbone)
    print(format_table(rows))
    cfa, pamcam = rows[0], rows[1]
    if args.backbone == "resnet50" and (args.height, args.width) == (256, 128):
        print(
            f"\nCFA vs paper: params {cfa.params / 1e6:.3f} M vs 1.3 M "
            f"({100 * (cfa.params / PAPER_CFA_PARAMS - 1):+.1f} %), "
            f"{cfa.gmac:.3f} GMAC vs 0.168 ({100 * (cfa.gmac / PAPER_CFA_GMAC - 1):+.1f} %)"
        )
        print(
            f"CFA saving vs our PAM-CAM: params {100 * (1 - cfa.params / pamcam.params):.1f} %, "
            f"MACs {100 * (1 - cfa.gmac / pamcam.gmac):.1f} %, FLOPs "
            f"{100 * (1 - cfa.gflops / pamcam.gflops):.1f} % (paper: 83.4 %)"
        )
    if not args.no_latency:
        t_base, t_ftn = latency_ratio(
            args.batch, args.height, args.width, args.runs, args.backbone, str(device), args.compile
        )
        where = (
            f"CUDA ({torch.cuda.get_device_name(device)}, bf16)"
            if device.type == "cuda"
            else f"CPU ({torch.get_num_threads()} threads)"
        )
        if args.compile != "off":
            where += f", compiled ({args.compile})"
        print(
            f"\n{where} inference, batch {args.batch}, {args.height}×{args.width}, median of "
            f"{args.runs}: Baseline {t_base * 1e3:.2f} ms, FTN {t_ftn * 1e3:.2f} ms, "
            f"ratio FTN/Baseline = {t_ftn / t_base:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
