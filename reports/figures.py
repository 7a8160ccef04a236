"""Result figures (seaborn's classic API, one style): metric bars, Δ-vs-paper scatter, CMC,
training curves and foreground focus. Each is written as PNG (web) and PDF (papers)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from ablations.variants import variants  # noqa: E402
from reports.load import LOSS_KEYS  # noqa: E402
from reports.tables import BASELINE, METRICS, rank_agreement  # noqa: E402

DPI = 110
FG_BRANCHES = {"fg_focus_stage3": "stage 3", "fg_focus_stage4": "stage 4",
               "fg_focus_attn": "attention (A′)", "fg_focus_global": "global",
               "fg_focus_local": "local"}


def set_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.05)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "axes.titleweight": "bold"})


def palette(table: int) -> dict[str, tuple]:
    """One colour per variant key of the table, the same in every figure and report."""
    keys = [v.key for v in variants(table, controls=True)]
    return dict(zip(keys, sns.color_palette("colorblind", len(keys))))


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """``stem.png`` and ``stem.pdf``, without timestamps so a rebuild gives the same bytes.

    The PNG is reduced to a 256-colour palette: heat-map overlays stay well under 200 KB.
    """
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    rgb = Image.open(buf).convert("RGB")
    rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        png, optimize=True)
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None, "Creator": None,
                                                   "Producer": None})
    plt.close(fig)
    return [png, pdf]


def _long_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    cols = {f"metrics.val/{m}": title for m, title in METRICS.items() if f"metrics.val/{m}" in runs}
    df = runs[["variant", "seed", *cols]].rename(columns=cols)
    return df.melt(id_vars=["variant", "seed"], var_name="metric", value_name="value").dropna()


def metric_bars(runs: pd.DataFrame, order: list[str], table: int, stem: Path) -> list[Path]:
    """R-1, R-5, mAP, mINP per variant: bar = mean over seeds, error bar = std, dots = seeds."""
    df = _long_metrics(runs)
    if df.empty:
        return []
    g = sns.catplot(data=df, kind="bar", x="variant", y="value", col="metric", col_wrap=2,
                    order=order, hue="variant", hue_order=order, palette=palette(table),
                    errorbar="sd", capsize=0.15, sharey=False, height=2.3, aspect=1.5,
                    legend=False, alpha=0.85)
    g.map_dataframe(sns.stripplot, x="variant", y="value", order=order, color="0.15", size=3,
                    jitter=False)  # no random jitter: a rebuild gives the same bytes
    g.set_titles("{col_name}").set_axis_labels("variant", "%")
    g.figure.suptitle("Our results per variant (mean ± std over seeds; dots = seeds)", y=1.02)
    return save(g.figure, stem)


def delta_scatter(summary: pd.DataFrame, table: int, dataset_note: str, stem: Path) -> list[Path]:
    """Our Δ vs our Baseline against the paper's Δ vs its Baseline, with Spearman's ρ."""
    df = summary[summary["variant"] != BASELINE]
    if df[["d_rank1", "d_mAP"]].isna().all().all():
        return []
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.3))
    colours = palette(table)
    for ax, m in zip(axes, ("rank1", "mAP")):
        sub = df[["variant", f"paper_d_{m}", f"d_{m}"]].dropna()
        sns.scatterplot(data=sub, x=f"paper_d_{m}", y=f"d_{m}", hue="variant",
                        palette=colours, s=45, ax=ax, legend=False)
        for r in sub.itertuples(index=False):
            ax.annotate(r[0], (r[1], r[2]), xytext=(4, 3), textcoords="offset points", fontsize=8)
        ax.axhline(0, color="0.4", lw=0.8, ls="--")
        ax.axvline(0, color="0.4", lw=0.8, ls="--")
        rho, n = rank_agreement(summary, m)
        text = f"Spearman ρ = {rho:+.2f} (n = {n})" if not math.isnan(rho) else \
            f"Spearman ρ: n/a (n = {n})"
        ax.text(0.03, 0.95, text, transform=ax.transAxes, va="top", fontsize=9,
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"})
        ax.set(title=f"Δ {METRICS[m]} vs Baseline", xlabel="paper Δ, points",
               ylabel="our Δ, points")
    fig.suptitle(f"Change against the Baseline: ours vs the paper's ({dataset_note})", fontsize=9)
    fig.tight_layout()
    return save(fig, stem)


def cmc_curves(cmc: pd.DataFrame, order: list[str], table: int, stem: Path,
               max_rank: int = 20) -> list[Path]:
    """CMC (percent) per variant, mean over seeds with a ±std band; ``cmc``: variant, seed,
    rank, value."""
    if cmc.empty:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sub = cmc[cmc["rank"] <= max_rank]
    sns.lineplot(data=sub, x="rank", y="value", hue="variant", hue_order=order,
                 palette=palette(table), errorbar="sd", marker="o", markersize=3, ax=ax)
    ax.set(title="CMC curves (mean over seeds)", xlabel="rank", ylabel="matching rate, %",
           xlim=(1, sub["rank"].max()))
    ax.legend(title="variant", fontsize=8, ncol=2)
    fig.tight_layout()
    return save(fig, stem)


def training_curves(hist: pd.DataFrame, order: list[str], table: int, stem: Path) -> list[Path]:
    """Each loss term (and val/mAP) over epochs, per variant, mean over seeds ± std."""
    if hist.empty:
        return []
    hist = hist.assign(term=hist["key"].str.replace("train/loss_", "loss ", regex=False))
    present = set(hist["key"])
    terms = [k.replace("train/loss_", "loss ") for k in (*LOSS_KEYS, "val/mAP") if k in present]
    g = sns.relplot(data=hist, kind="line", x="step", y="value", hue="variant", hue_order=order,
                    palette=palette(table), col="term", col_order=terms,
                    col_wrap=min(3, len(terms)), errorbar="sd", height=2.2, aspect=1.35,
                    marker="o", markersize=3, facet_kws={"sharey": False, "sharex": True})
    g.set_titles("{col_name}").set_axis_labels("epoch", "")
    for ax in g.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    g.figure.suptitle("Training curves (mean over seeds ± std)", y=1.03)
    return save(g.figure, stem)


def fg_focus(runs: pd.DataFrame, order: list[str], stem: Path,
             mask_share: float | None = None) -> list[Path]:
    """Percent of activation mass inside the person mask, per variant and branch (synthetic)."""
    cols = {f"metrics.val/{k}": name for k, name in FG_BRANCHES.items() if f"metrics.val/{k}" in runs}
    if not cols:
        return []
    df = runs[["variant", "seed", *cols]].rename(columns=cols).melt(
        id_vars=["variant", "seed"], var_name="branch", value_name="value").dropna()
    if df.empty:
        return []
    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    sns.barplot(data=df, x="variant", y="value", hue="branch", order=order,
                hue_order=[b for b in FG_BRANCHES.values() if b in set(df["branch"])],
                errorbar="sd", capsize=0.1, palette="muted", ax=ax)
    if mask_share is not None:
        ax.axhline(mask_share, color="0.2", ls="--", lw=1, label=f"uniform map ({mask_share:.0f} %)")
    ax.set(title="Foreground focus: share of activation inside the person mask",
           xlabel="variant", ylabel="%", ylim=(0, 100))
    ax.legend(title="branch", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return save(fig, stem)
