"""Efficiency table (paper §4.2's cost claim): parameters, MACs, FLOPs and CPU latency of each
variant at inference, measured on the model built from the run's own config and input size.

Inference runs S-Enc, the branches and their embedding heads; TF-Dec never runs (it is left
out of "params (inference)"; "params (training)" counts it). MACs = convolutions and linear
layers (the paper's convention), FLOPs = ``torch.utils.flop_counter``'s full count.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd
import torch

from ftn_core.config import Config
from ftn_core.cost import conv_linear_macs, count_params, full_flops, latency
from ftn_core.model import build_model

LATENCY_BATCH = 8
LATENCY_RUNS = 5


def measure_variant(cfg: Config, n_classes: int) -> dict[str, float]:
    """Per-image cost of one variant at its input size (CPU, eval mode, batch ``LATENCY_BATCH``)."""
    torch.manual_seed(0)
    model = build_model(cfg.model, n_classes, load_init=False).eval()
    total = count_params(model)
    decoder = count_params(model.decoder) if model.decoder is not None else 0
    classifiers = sum(count_params(h.classifier) for h in model.heads.values())
    one = torch.rand(1, 3, cfg.data.height, cfg.data.width)
    batch = torch.rand(LATENCY_BATCH, 3, cfg.data.height, cfg.data.width)
    times = [latency(model, batch, runs=1, warmup=1 if i == 0 else 0) for i in range(LATENCY_RUNS)]
    return {"params_inference": total - decoder - classifiers, "params_training": total,
            "gmac": conv_linear_macs(model, one) / 1e9,
            "gflops": full_flops(model, one) / 1e9,
            "latency_ms": 1e3 * statistics.median(times) / LATENCY_BATCH}


def efficiency_table(configs: dict[str, tuple[str, Config, int]]) -> pd.DataFrame:
    """``configs``: variant key → (label, config, number of classes), in table order."""
    rows = []
    for key, (label, cfg, n_classes) in configs.items():
        row = {"variant": key, "variant_label": label, "backbone": cfg.model.backbone,
               "input": f"{cfg.data.height}×{cfg.data.width}"}
        row.update(measure_variant(cfg, n_classes))
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df) and "base" in set(df["variant"]):
        base = df.loc[df["variant"] == "base", "latency_ms"].iloc[0]
        df["latency_vs_base"] = df["latency_ms"] / base
    return df


def write_efficiency(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``efficiency.csv`` (numbers) and ``efficiency.md``."""
    csv_path, md_path = out_dir / "efficiency.csv", out_dir / "efficiency.md"
    df.to_csv(csv_path, index=False, float_format="%.5g")
    shown = pd.DataFrame({
        "Variant": df["variant_label"], "backbone": df["backbone"], "input": df["input"],
        "params inference (M)": (df["params_inference"] / 1e6).map("{:.3f}".format),
        "params training (M)": (df["params_training"] / 1e6).map("{:.3f}".format),
        "GMAC (conv+fc)": df["gmac"].map("{:.3f}".format),
        "GFLOPs (full)": df["gflops"].map("{:.3f}".format),
        "CPU ms / image": df["latency_ms"].map("{:.2f}".format),
    })
    if "latency_vs_base" in df:
        shown["× Baseline"] = df["latency_vs_base"].map("{:.2f}".format)
    md_path.write_text(shown.to_markdown(index=False) + "\n", encoding="utf-8")
    return [csv_path, md_path]


def threads_note() -> str:
    return (f"CPU latency: eval mode, batch {LATENCY_BATCH}, median of {LATENCY_RUNS} runs, "
            f"{torch.get_num_threads()} threads; per image.")
