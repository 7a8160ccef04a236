"""Efficiency table (paper §4.2's cost claim): parameters, MACs, FLOPs and CPU latency of each
variant at inference, as each run measured its own model when it finished (``efficiency.json``,
``ablations/measures.py``; ``python ablations/per_query.py`` adds it to older runs).

Inference runs S-Enc, the branches and their embedding heads; TF-Dec never runs (it is left
out of "params (inference)"; "params (training)" counts it). MACs = convolutions and linear
layers (the paper's convention), FLOPs = ``torch.utils.flop_counter``'s full count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = ("params_inference", "params_training", "gmac", "gflops", "latency_ms")


def efficiency_table(
    measured: dict[str, tuple[str, dict[str, Any]]], reference: str
) -> pd.DataFrame:
    """``measured``: variant key → (label, the run's ``efficiency.json``), in table order; each
    latency also as a multiple of the ``reference`` row's (``latency_vs_reference``)."""
    rows = []
    for key, (label, d) in measured.items():
        height, width = d["input"]
        rows.append(
            {
                "variant": key,
                "variant_label": label,
                "backbone": d["backbone"],
                "input": f"{height}×{width}",
                **{c: d[c] for c in COLUMNS},
            }
        )
    df = pd.DataFrame(rows)
    if len(df) and reference in set(df["variant"]):
        ref = df.loc[df["variant"] == reference, "latency_ms"].iloc[0]
        df["latency_vs_reference"] = df["latency_ms"] / ref
    return df


def write_efficiency(df: pd.DataFrame, out_dir: Path, reference_name: str = "") -> list[Path]:
    """``efficiency.csv`` (numbers) and ``efficiency.md``; ``reference_name``: what the latency
    ratio's column calls the reference row ("Baseline"; "" → "reference")."""
    csv_path, md_path = out_dir / "efficiency.csv", out_dir / "efficiency.md"
    df.to_csv(csv_path, index=False, float_format="%.5g")
    shown = pd.DataFrame(
        {
            "Variant": df["variant_label"],
            "backbone": df["backbone"],
            "input": df["input"],
            "params inference (M)": (df["params_inference"] / 1e6).map("{:.3f}".format),
            "params training (M)": (df["params_training"] / 1e6).map("{:.3f}".format),
            "GMAC (conv+fc)": df["gmac"].map("{:.3f}".format),
            "GFLOPs (full)": df["gflops"].map("{:.3f}".format),
            "CPU ms / image": df["latency_ms"].map("{:.2f}".format),
        }
    )
    if "latency_vs_reference" in df:
        shown[f"× {reference_name or 'reference'}"] = df["latency_vs_reference"].map(
            "{:.2f}".format
        )
    md_path.write_text(shown.to_markdown(index=False) + "\n", encoding="utf-8")
    return [csv_path, md_path]


def latency_note(measured: dict[str, tuple[str, dict[str, Any]]]) -> str:
    """How the latency column was timed: by each run when it finished, on its own machine."""
    first = next(iter(measured.values()))[1]
    machines = sorted({d.get("machine", "an unrecorded machine") for _, d in measured.values()})
    where = machines[0] if len(machines) == 1 else "; ".join(machines)
    return (
        f"CPU latency: eval mode, batch {first['latency_batch']}, median of "
        f"{first['latency_runs']} passes, per image, timed by each run when it finished, with "
        f"whatever else ran on its machine ({where}); `make bench` times quietly."
    )
