"""The sweep figure of a study: R-1 and mAP against the swept value, with 95 % intervals."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ablations.study import Study, spans_decades  # noqa: E402
from reports.figures import save  # noqa: E402
from reports.summary import DELTA_METRICS, METRICS  # noqa: E402


def points(summary: pd.DataFrame, runs: pd.DataFrame, study: Study) -> pd.DataFrame:
    """One row per swept value that has runs: value, and for R-1 and mAP the mean over seeds,
    its 95 % t-interval (``<m>_lo`` / ``<m>_hi``; NaN with one seed) and the seeds' values."""
    s = summary.set_index("variant")
    rows = []
    for key, value in study.sweep_values:
        if key not in s.index:
            continue
        r = s.loc[key]
        row = {"variant": key, "value": value, "n": int(r["n"])}
        for m in DELTA_METRICS:
            row[m] = r[f"{m}_mean"]
            row[f"{m}_lo"] = r.get(f"{m}_ci_lo", math.nan)
            row[f"{m}_hi"] = r.get(f"{m}_ci_hi", math.nan)
            col = f"metrics.val/{m}"
            row[f"{m}_seeds"] = (
                runs.loc[runs["variant"] == key, col].astype(float).tolist() if col in runs else []
            )
        rows.append(row)
    return pd.DataFrame(rows)


def figure(summary: pd.DataFrame, runs: pd.DataFrame, study: Study, stem: Path) -> list[Path]:
    """``stem.png`` / ``.pdf``: one panel per metric (R-1, mAP), the mean over seeds at each
    swept value with its 95 % interval (t over seeds) and the seeds as dots; a log x-axis when
    the values span decades; the reference row as a dashed line when it is not a swept value."""
    df = points(summary, runs, study)
    if df.empty or study.sweep is None:
        return []
    values = list(df["value"])
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    x = np.asarray(values, dtype=float) if numeric else np.arange(len(values), dtype=float)
    log = numeric and spans_decades(values)
    fig, axes = plt.subplots(1, len(DELTA_METRICS), figsize=(4.2 * len(DELTA_METRICS), 3.2))
    s = summary.set_index("variant")
    swept = {k for k, _ in study.sweep_values}
    for ax, m in zip(np.atleast_1d(axes), DELTA_METRICS):
        lo = (df[m] - df[f"{m}_lo"]).to_numpy(float)
        hi = (df[f"{m}_hi"] - df[m]).to_numpy(float)
        has_ci = ~np.isnan(lo) & ~np.isnan(hi)
        ax.plot(x, df[m], marker="o", color="C0", zorder=3, label="mean over seeds")
        if has_ci.any():
            ax.errorbar(
                x[has_ci],
                df[m][has_ci],
                yerr=[lo[has_ci], hi[has_ci]],
                fmt="none",
                ecolor="C0",
                capsize=4,
                elinewidth=1.2,
                zorder=2,
                label="95 % interval (seeds)",
            )
        for xi, seeds in zip(x, df[f"{m}_seeds"]):
            ax.scatter(
                [xi] * len(seeds),
                seeds,
                s=10,
                color="0.35",
                zorder=4,
                label="seeds" if xi == x[0] else None,
            )
        ref = study.reference
        if ref not in swept and ref in s.index and not math.isnan(s.loc[ref, f"{m}_mean"]):
            ax.axhline(
                s.loc[ref, f"{m}_mean"],
                ls="--",
                color="C3",
                lw=1,
                label=f"reference: {s.loc[ref, 'variant_label']}",
            )
        if log:
            ax.set_xscale("log")
            ax.set_xticks(x)
            ax.set_xticklabels([f"{v:g}" for v in values])
            ax.minorticks_off()
        elif not numeric:
            ax.set_xticks(x)
            ax.set_xticklabels([str(v) for v in values])
        bottom, top = ax.get_ylim()  # a score lies in [0, 100]: a t-interval over few seeds may not
        ax.set_ylim(max(bottom, 0.0), min(top, 100.0))
        ax.set(
            xlabel=study.sweep.field + (" (log scale)" if log else ""),
            ylabel=f"{METRICS[m]} (%)",
            title=METRICS[m],
        )
        ax.grid(alpha=0.3)
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        fontsize=8,
        loc="lower center",
        ncol=len(handles),
        frameon=False,
        bbox_to_anchor=(0.5, -0.08),
    )  # below the panels: never over a point or a bar
    seeds = sorted({int(n) for n in df["n"]})
    fig.suptitle(
        f"{study.name}: R-1 and mAP against {study.sweep.field} "
        f"({'/'.join(map(str, seeds))} seed{'s' if max(seeds) > 1 else ''} per value)",
        y=1.02,
    )
    fig.tight_layout()
    return save(fig, stem)
