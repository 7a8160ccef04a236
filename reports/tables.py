"""The ablation table: our mean ± std over seeds beside the paper's numbers and Δ-vs-Baseline.

Our metrics are the last logged ``val/*`` values of each run, in percent like the paper's.
``±`` is the sample standard deviation (ddof = 1) over seeds; one seed gives no ±.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ablations.variants import paper_results
from reports.load import TableRuns

METRICS = {"rank1": "R-1", "rank5": "R-5", "mAP": "mAP", "mINP": "mINP"}
"""Our columns, in order (name in ``val/<name>`` → column title)."""
DELTA_METRICS = ("rank1", "mAP")
"""The paper reports R-1 and mAP only, so Δ is compared on those."""
BASELINE = "base"


def paper_dataset(dataset: str) -> str:
    """The paper dataset our numbers are set beside: synthetic data → Market-1501's."""
    return "market1501" if dataset.startswith("synthetic") else dataset


def summarize(tr: TableRuns) -> pd.DataFrame:
    """One row per variant (table order): ``n``, ``<m>_mean`` / ``<m>_std`` for METRICS and
    ``fg_focus``, ``paper_<m>``, ``d_<m>`` (ours − our Baseline) and ``paper_d_<m>``."""
    runs = tr.runs
    paper = {r["row"]: r for r in paper_results(tr.table)
             if r["dataset"] == paper_dataset(tr.dataset)}
    rows = []
    for key in tr.order:
        sub = runs[runs["variant"] == key]
        row: dict = {"variant": key, "variant_label": sub["variant_label"].iloc[0],
                     "n": len(sub), "seeds": " ".join(str(s) for s in sorted(sub["seed"]))}
        for m in (*METRICS, "fg_focus"):
            col = f"metrics.val/{m}"
            values = sub[col].astype(float) if col in sub else pd.Series(dtype=float)
            row[f"{m}_mean"] = values.mean() if values.notna().any() else math.nan
            row[f"{m}_std"] = values.std(ddof=1) if values.notna().sum() > 1 else math.nan
        for m in DELTA_METRICS:
            row[f"paper_{m}"] = paper[key][m] if key in paper else math.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    base = df[df["variant"] == BASELINE]
    for m in DELTA_METRICS:
        ours0 = base[f"{m}_mean"].iloc[0] if len(base) else math.nan
        paper0 = paper[BASELINE][m] if BASELINE in paper else math.nan
        df[f"d_{m}"] = df[f"{m}_mean"] - ours0
        df[f"paper_d_{m}"] = df[f"paper_{m}"] - paper0
    return df


def missing_metrics(tr: TableRuns) -> list[str]:
    """``val/mINP: missing in base-s0, g-s1`` for every METRICS value a kept run lacks."""
    out = []
    for m in METRICS:
        col = f"metrics.val/{m}"
        lacking = tr.runs["name"] if col not in tr.runs else tr.runs.loc[tr.runs[col].isna(), "name"]
        if len(lacking):
            out.append(f"val/{m}: missing in {', '.join(map(str, lacking))}")
    return out


def rank_agreement(summary: pd.DataFrame, metric: str) -> tuple[float, int]:
    """Spearman ρ between our Δ and the paper's Δ over the non-Baseline variants that have
    both; NaN when fewer than 3 or when either ordering is constant. Returns (ρ, n)."""
    df = summary[summary["variant"] != BASELINE][[f"d_{metric}", f"paper_d_{metric}"]].dropna()
    x, y = df.iloc[:, 0].to_numpy(), df.iloc[:, 1].to_numpy()
    if len(df) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, len(df)
    return float(spearmanr(x, y).statistic), len(df)


def _pm(mean: float, std: float, latex: bool = False) -> str:
    if math.isnan(mean):
        return "—" if not latex else "--"
    if math.isnan(std):
        return f"{mean:.1f}"
    return f"${mean:.1f} \\pm {std:.1f}$" if latex else f"{mean:.1f} ± {std:.1f}"


def _delta(value: float, latex: bool = False) -> str:
    if math.isnan(value):
        return "—" if not latex else "--"
    text = f"{value:+.1f}"
    return f"${text}$" if latex else text.replace("-", "−")


def _num(value: float, latex: bool = False) -> str:
    return ("--" if latex else "—") if math.isnan(value) else f"{value:.1f}"


def display(summary: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """The table as text cells (mean ± std; Δ signed); the columns of the paper's tables."""
    has_fg = summary["fg_focus_mean"].notna().any()
    rows = []
    for r in summary.itertuples():
        row = {"Variant": r.variant_label, "seeds": r.n}
        for m, title in METRICS.items():
            row[title] = _pm(getattr(r, f"{m}_mean"), getattr(r, f"{m}_std"), latex)
        if has_fg:
            row["fg focus"] = _pm(r.fg_focus_mean, r.fg_focus_std, latex)
        row["paper R-1"] = _num(r.paper_rank1, latex)
        row["paper mAP"] = _num(r.paper_mAP, latex)
        is_base = r.variant == BASELINE
        for m in DELTA_METRICS:
            ours, theirs = (math.nan, math.nan) if is_base else (getattr(r, f"d_{m}"),
                                                                 getattr(r, f"paper_d_{m}"))
            d = "$\\Delta$ " if latex else "Δ"
            row[f"{d}{METRICS[m]}"] = _delta(ours, latex)
            row[f"paper {d}{METRICS[m]}"] = _delta(theirs, latex)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(summary: pd.DataFrame) -> str:
    """The display table in Markdown, cells kept as written (no re-parsing of "+1.0")."""
    shown = display(summary)
    align = ["left"] + ["right"] * (shown.shape[1] - 1)
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text


def write_tables(summary: pd.DataFrame, out_dir: Path, caption: str) -> list[Path]:
    """``table.csv`` (numbers), ``table.md`` and ``table.tex`` in ``out_dir``."""
    csv_path, md_path, tex_path = out_dir / "table.csv", out_dir / "table.md", out_dir / "table.tex"
    summary.to_csv(csv_path, index=False, float_format="%.4f")
    md_path.write_text(markdown(summary) + "\n", encoding="utf-8")
    tex = display(summary, latex=True)
    tex["Variant"] = tex["Variant"].map(_latex_escape)
    body = tex.style.hide(axis="index").to_latex(
        hrules=True, column_format="l" + "r" * (tex.shape[1] - 1),
        caption=_latex_escape(caption), position="t")
    tex_path.write_text(body, encoding="utf-8")
    return [csv_path, md_path, tex_path]


def verdicts(summary: pd.DataFrame) -> list[str]:
    """One plain sentence per non-Baseline variant: does it beat our Baseline, and the paper's?"""
    if BASELINE not in set(summary["variant"]):
        return ["There are no Baseline runs, so no variant can be compared with the Baseline."]
    lines = []
    for r in summary[summary["variant"] != BASELINE].itertuples():
        d1, dm = r.d_rank1, r.d_mAP
        if math.isnan(d1) and math.isnan(dm):
            lines.append(f"**{r.variant_label}**: no R-1 / mAP logged, so it cannot be compared.")
            continue
        better = [METRICS[m] for m, d in (("rank1", d1), ("mAP", dm)) if not math.isnan(d) and d > 0]
        worse = [METRICS[m] for m, d in (("rank1", d1), ("mAP", dm)) if not math.isnan(d) and d <= 0]
        nums = (f"Δ R-1 {_delta(d1)}, Δ mAP {_delta(dm)}; paper {_delta(r.paper_d_rank1)} / "
                f"{_delta(r.paper_d_mAP)}")
        if not better:
            verdict = "does **not** beat our Baseline"
        elif worse:
            verdict = (f"beats our Baseline on {' and '.join(better)} but **not** on "
                       f"{' and '.join(worse)}")
        else:
            verdict = "beats our Baseline on R-1 and mAP"
        noise = _within_noise(summary, r)
        lines.append(f"**{r.variant_label}** {verdict} ({nums}){noise}.")
    return lines


def _within_noise(summary: pd.DataFrame, r) -> str:
    """Flag a change smaller than the seed spread of the two rows compared (√(σ₁² + σ₂²))."""
    base = summary[summary["variant"] == BASELINE].iloc[0]
    if r.n < 2 or base["n"] < 2:
        return "; one seed only, so the change may be noise"
    flagged = []
    for m in DELTA_METRICS:
        spread = float(np.sqrt(np.nansum([base[f"{m}_std"] ** 2, getattr(r, f"{m}_std") ** 2])))
        d = getattr(r, f"d_{m}")
        if not math.isnan(d) and abs(d) < spread:
            flagged.append(f"{METRICS[m]} ±{spread:.1f}")
    if flagged:
        return f"; within the seed spread ({', '.join(flagged)})"
    return ""
