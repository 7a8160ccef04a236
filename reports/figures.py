"""Result figures (seaborn's classic API, one style): Δ against the Baseline with its 95 %
interval, Δ-vs-paper scatter, CMC and training curves. Each is written as PNG (web) and PDF
(papers)."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from ablations.variants import variants  # noqa: E402
from reports import stats  # noqa: E402
from reports.cells import signed  # noqa: E402
from reports.load import LOSS_KEYS  # noqa: E402
from reports.summary import DELTA_METRICS, METRICS, rank_agreement  # noqa: E402
from reports.tables import has_paper_numbers  # noqa: E402
from reports.wording import PAPER_WORDS, Wording  # noqa: E402

DPI = 110
MARKERS = ("o", "s", "D", "^", "v", "<", ">", "p", "h", "8")
"""One marker per variant (table order), so variants differ by more than colour."""


def set_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.05)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "axes.titleweight": "bold"})


def palette(table: int) -> dict[str, tuple]:
    """One colour per variant key of the table, the same in every figure and report."""
    keys = [v.key for v in variants(table, controls=True)]
    return dict(zip(keys, sns.color_palette("colorblind", len(keys))))


def markers(table: int) -> dict[str, str]:
    """One marker per variant key of the table, the same in every figure."""
    keys = [v.key for v in variants(table, controls=True)]
    return {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(keys)}


def wrap(label: str, width: int = 30) -> str:
    """A variant label on lines of at most ``width`` characters (labels with overrides are long)."""
    return "\n".join(textwrap.wrap(str(label), width)) or str(label)


def save(fig: plt.Figure, stem: Path, palette: bool = True) -> list[Path]:
    """``stem.png`` and ``stem.pdf``, without timestamps so a rebuild gives the same bytes.

    ``palette``: the PNG is reduced to 256 colours (charts lose nothing and shrink); figures of
    photos under heat maps keep full colour, whose gradients a palette would cut into bands.
    """
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    rgb = Image.open(buf).convert("RGB")
    if palette:
        rgb = rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    rgb.save(png, optimize=True)
    fig.savefig(
        pdf, bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None}
    )
    plt.close(fig)
    return [png, pdf]


def _xerr(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """(2, n) distances from each value to its interval's ends; None when no end is known."""
    if np.isnan(lo).all() and np.isnan(hi).all():
        return None
    return np.vstack([values - lo, hi - values])


def compared(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows with a Δ: all but the reference row (``is_reference``)."""
    return summary[~summary["is_reference"].astype(bool)]


def _intervals(df: pd.DataFrame, m: str) -> tuple[np.ndarray, np.ndarray]:
    """The paired interval of each row's Δ (NaN without per-query results)."""
    nan = np.full(len(df), np.nan)
    lo = df[f"d_{m}_lo"].to_numpy(float) if f"d_{m}_lo" in df else nan
    hi = df[f"d_{m}_hi"].to_numpy(float) if f"d_{m}_hi" in df else nan
    return lo, hi


def draw_delta_intervals(
    summary: pd.DataFrame, table: int, dataset_note: str, words: Wording = PAPER_WORDS
) -> plt.Figure | None:
    """Each variant's Δ R-1 and Δ mAP against the reference row (dot, named by ``words``) with
    its 95 % paired interval (bar; ``summary.add_uncertainty``) beside the paper's Δ (open
    diamond). None when no Δ is known."""
    df = compared(summary).reset_index(drop=True)
    if df.empty or df[[f"d_{m}" for m in DELTA_METRICS]].isna().all().all():
        return None
    colours = palette(table)
    own = words.unnamed_label
    y = np.arange(len(df))
    fig, axes = plt.subplots(
        1, len(DELTA_METRICS), sharey=True, figsize=(8.0, 1.4 + 0.5 * len(df)), squeeze=False
    )
    with_ci = False
    for ax, m in zip(axes[0], DELTA_METRICS):
        d = df[f"d_{m}"].to_numpy(float)
        lo, hi = _intervals(df, m)
        with_ci |= not np.isnan(lo).all()
        for i, key in enumerate(df["variant"]):
            err = _xerr(d[i : i + 1], lo[i : i + 1], hi[i : i + 1])
            ax.errorbar(
                d[i],
                y[i],
                xerr=err,
                fmt="o",
                ms=6,
                capsize=4,
                lw=1.6,
                color=colours.get(key, "0.3"),
                gid=f"ours:{key}",
            )
        ax.scatter(
            df[f"paper_d_{m}"],
            y,
            marker="D",
            s=36,
            facecolors="none",
            edgecolors="0.15",
            linewidths=1.2,
            zorder=3,
            gid="paper",
        )
        ax.axvline(0, color="0.3", lw=0.9, ls="--")
        ax.set(
            title=f"Δ {METRICS[m]} against {words.the_ref}",
            xlabel="Δ, points",
        )
        ax.margins(x=0.12)
    axes[0, 0].set_yticks(y, [wrap(label) for label in df["variant_label"]])
    axes[0, 0].set_ylim(len(df) - 0.5, -0.5)  # table order, top to bottom
    ours = (
        "ours: mean over paired seeds, bar = 95 % CI (paired by seed)"
        if with_ci
        else "ours: mean over paired seeds (no per-query results: no interval)"
    )
    handles = [plt.Line2D([], [], color="0.3", marker="o", lw=1.6, label=ours)]
    if own:
        handles.append(
            plt.Line2D([], [], color="0.3", lw=0.9, ls="--", label=f"0 = the reference row: {own}")
        )
    if has_paper_numbers(df):
        handles.append(
            plt.Line2D(
                [],
                [],
                color="0.15",
                marker="D",
                mfc="none",
                ls="none",
                label=f"paper's Δ ({dataset_note})",
            )
        )
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=len(handles),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, -0.01),
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def delta_intervals(
    summary: pd.DataFrame,
    table: int,
    dataset_note: str,
    stem: Path,
    words: Wording = PAPER_WORDS,
) -> list[Path]:
    """``draw_delta_intervals`` as PNG and PDF (nothing when no Δ is known)."""
    fig = draw_delta_intervals(summary, table, dataset_note, words)
    return save(fig, stem) if fig is not None else []


def draw_delta_scatter(summary: pd.DataFrame, table: int, dataset_note: str) -> plt.Figure | None:
    """Our Δ (with its 95 % interval) against the paper's Δ, per variant, with Spearman's ρ and
    how many of our intervals exclude 0. None when no variant has both."""
    df = compared(summary)
    if not any(df[[f"paper_d_{m}", f"d_{m}"]].notna().all(axis=1).any() for m in DELTA_METRICS):
        return None  # e.g. a study of the user's own: no paper numbers, nothing to plot against
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 4.0))
    colours, marks = palette(table), markers(table)
    shown: dict[str, str] = {}
    for ax, m in zip(axes, DELTA_METRICS):
        sub = df[df[[f"paper_d_{m}", f"d_{m}"]].notna().all(axis=1)]
        lo, hi = _intervals(sub, m)
        d = sub[f"d_{m}"].to_numpy(float)
        for i, r in enumerate(sub.itertuples(index=False)):
            ax.errorbar(
                getattr(r, f"paper_d_{m}"),
                d[i],
                yerr=_xerr(d[i : i + 1], lo[i : i + 1], hi[i : i + 1]),
                fmt=marks.get(r.variant, "o"),
                ms=6,
                capsize=4,
                lw=1.4,
                color=colours.get(r.variant, "0.3"),
                gid=f"ours:{r.variant}",
            )
            shown[r.variant] = r.variant_label
        ax.axhline(0, color="0.4", lw=0.8, ls="--")
        ax.axvline(0, color="0.4", lw=0.8, ls="--")
        rho, n = rank_agreement(summary, m)
        text = (
            f"Spearman ρ = {signed(rho, 2)} (n = {n})"
            if not math.isnan(rho)
            else f"Spearman ρ: n/a (n = {n})"
        )
        known = ~np.isnan(lo) & ~np.isnan(hi)
        if known.any():
            clear = int(((lo[known] > 0) | (hi[known] < 0)).sum())
            text += f"\n{clear} of {int(known.sum())} intervals exclude 0"
        # Under the axis, not in a box inside it, where it could hide the end of a bar.
        ax.set(
            title=f"Δ {METRICS[m]} against the Baseline",
            xlabel="paper's Δ, points\n" + text,
            ylabel="our Δ, points (bar = 95 % CI)",
        )
        ax.margins(0.15)
    fig.suptitle(f"Our change against the Baseline vs the paper's ({dataset_note})", fontsize=9)
    handles = [
        plt.Line2D(
            [],
            [],
            color=colours.get(k, "0.3"),
            marker=marks.get(k, "o"),
            ls="none",
            label=wrap(label, 40),
        )
        for k, label in shown.items()
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(3, max(1, len(handles))),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, -0.02),
    )
    rows = math.ceil(len(handles) / 3)
    fig.tight_layout(rect=(0, 0.06 + 0.055 * rows, 1, 1))
    return fig


def delta_scatter(summary: pd.DataFrame, table: int, dataset_note: str, stem: Path) -> list[Path]:
    """``draw_delta_scatter`` as PNG and PDF (nothing when no Δ is known)."""
    fig = draw_delta_scatter(summary, table, dataset_note)
    return save(fig, stem) if fig is not None else []


def _seed_ci(values: pd.Series) -> tuple[float, float]:
    return stats.seed_interval(np.asarray(values, dtype=float))


def paired_cmc(cmc: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per (variant, seed, rank): the variant's CMC minus the reference's at the same seed and
    rank, for the seeds both have (the reference itself left out)."""
    ref = cmc[cmc["variant"] == reference][["seed", "rank", "value"]]
    other = cmc[cmc["variant"] != reference]
    both = other.merge(ref, on=["seed", "rank"], suffixes=("", "_ref"))
    return both.assign(value=both["value"] - both["value_ref"]).drop(columns="value_ref")


def draw_cmc(
    cmc: pd.DataFrame,
    order: list[str],
    table: int,
    max_rank: int = 20,
    *,
    reference: str,
    words: Wording = PAPER_WORDS,
) -> plt.Figure:
    """(a) CMC (percent) per variant, mean over seeds (±std band with up to 3 variants); then,
    where the reference row (the Baseline, or a study's own) exists, one small panel per
    variant: its CMC minus the reference's, paired by seed, with the 95 % t-interval over seeds
    (``stats.seed_interval``). ``cmc``: variant, seed, rank, value."""
    sub = cmc[cmc["rank"] <= max_rank]
    diff = paired_cmc(sub, reference) if reference in set(sub["variant"]) else sub.iloc[:0]
    present = [k for k in order if k in set(sub["variant"])]
    keys = [k for k in present if k in set(diff["variant"])]
    ncols = min(4, len(keys)) if keys else 1
    nrows = math.ceil(len(keys) / ncols) if keys else 0
    fig = plt.figure(figsize=(max(6.0, 2.6 * ncols), 3.4 + 2.1 * nrows), layout="constrained")
    top, bottom = (
        fig.subfigures(2, 1, height_ratios=[3.4, max(2.1 * nrows, 1e-3)]) if keys else (fig, None)
    )
    colours, marks = palette(table), markers(table)
    ax = top.subplots()
    bands = len(present) <= 3
    sns.lineplot(
        data=sub,
        x="rank",
        y="value",
        hue="variant",
        style="variant",
        hue_order=present,
        style_order=present,
        palette=colours,
        markers=marks,
        dashes=False,
        markersize=5,
        errorbar="sd" if bands else None,
        ax=ax,
    )
    ax.set(
        title="(a) CMC, mean over seeds" + (" (band = std)" if bands else ""),
        xlabel="rank",
        ylabel="matching rate, %",
    )
    ax.legend(title="variant", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes = [ax]
    if keys:
        small = bottom.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
        for sax, key in zip(small.flat, keys):
            sns.lineplot(
                data=diff[diff["variant"] == key],
                x="rank",
                y="value",
                color=colours.get(key, "0.3"),
                marker=marks.get(key, "o"),
                markersize=4,
                errorbar=_seed_ci,
                ax=sax,
            )
            sax.axhline(0, color="0.3", lw=0.9, ls="--")
            sax.set_title(key, fontsize=8)
            sax.set(xlabel="rank", ylabel="Δ, points")
        for sax in small.flat[len(keys) :]:
            sax.remove()
        whose = words.refs if words.name else f"{reference}'s (the reference row)"
        bottom.suptitle(
            f"(b) CMC minus {whose}, paired by seed (band = 95 % CI over seeds)",
            fontsize=9,
            fontweight="bold",
        )
        axes += list(small.flat[: len(keys)])
    last = int(sub["rank"].max())
    ticks = [1] + list(range(5, last + 1, 5)) if last >= 5 else list(range(1, last + 1))
    for a in axes:
        a.set_xticks(ticks)
        a.set_xlim(0.5, last + 0.5)
    ax.title.set_fontsize(9)
    return fig


def cmc_curves(
    cmc: pd.DataFrame,
    order: list[str],
    table: int,
    stem: Path,
    max_rank: int = 20,
    *,
    reference: str,
    words: Wording = PAPER_WORDS,
) -> list[Path]:
    """``draw_cmc`` as PNG and PDF (nothing when no run has a CMC)."""
    if cmc.empty:
        return []
    return save(draw_cmc(cmc, order, table, max_rank, reference=reference, words=words), stem)


def training_curves(hist: pd.DataFrame, order: list[str], table: int, stem: Path) -> list[Path]:
    """Each loss term (and val/mAP where it was evaluated at two epochs or more) over epochs,
    per variant, mean over seeds ± std."""
    if hist.empty:
        return []
    steps = hist.groupby("key")["step"].nunique()
    hist = hist[hist["key"].map(steps) > 1]  # one point is not a curve
    if hist.empty:
        return []
    hist = hist.assign(term=hist["key"].str.replace("train/loss_", "loss ", regex=False))
    present = set(hist["key"])
    terms = [k.replace("train/loss_", "loss ") for k in (*LOSS_KEYS, "val/mAP") if k in present]
    g = sns.relplot(
        data=hist,
        kind="line",
        x="step",
        y="value",
        hue="variant",
        hue_order=order,
        palette=palette(table),
        col="term",
        col_order=terms,
        col_wrap=min(3, len(terms)),
        errorbar="sd",
        height=2.2,
        aspect=1.35,
        marker="o",
        markersize=3,
        facet_kws={"sharey": False, "sharex": True},
    )
    g.set_titles("{col_name}").set_axis_labels("epoch", "")
    for ax in g.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    g.figure.suptitle("Training curves (mean over seeds ± std)", y=1.03)
    return save(g.figure, stem)
