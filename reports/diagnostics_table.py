"""The diagnostics table and figure: where the feature maps look, whether TF-Dec's target
masks find the person, and how hard a reconstruction batch pushes the encoder.

Columns, each the mean ± std over seeds (ddof = 1; one seed gives no ±) of one value per run:

- ``focus_<map>`` = ``val/fg_focus_norm_<map>`` for stage3, stage4, attn (A′) and global
  (stage 5): the share of the map's activation mass inside the person mask, rescaled so that
  a uniform map scores 0 and the best map the map's resolution allows 100 (``ftn_core.
  diagnostics.normalised_focus``); negative = the map prefers the background.
- ``auc_<mask>`` = ``val/mask_auc_<mask>`` for gm, pam, cam and gm_pam_cam: the pixel ROC AUC
  × 100 of TF-Dec's soft target masks against the person mask; 50 = chance.
- ``recon_grad_ratio``: the run's mean of ``train/recon_grad_ratio`` over the epochs it was
  logged (variants with TF-Dec, after any frozen warm-up).

Like the main table, ``val/*`` values are each run's last evaluation. A value a run did not log
(no CFA, no TF-Dec, no person masks, or a store from before the diagnostics) is left out of
the mean; a column that no variant logged is dropped.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports.cells import latex_escape, markdown_cells, pm  # noqa: E402
from reports.figures import palette, save  # noqa: E402
from reports.load import TableRuns  # noqa: E402

FOCUS = {"stage3": "stage 3", "stage4": "stage 4", "attn": "A′", "global": "global"}
"""Maps of the normalised-focus columns (``val/fg_focus_norm_<key>``) → title."""
AUC = {"gm": "Gm", "pam": "PAm", "cam": "CAm", "gm_pam_cam": "Gm·PAm·CAm"}
"""Soft masks of the AUC columns (``val/mask_auc_<key>``) → title."""
RATIO = "recon_grad_ratio"
RATIO_KEY = f"train/{RATIO}"
SOURCES = {
    **{f"focus_{k}": f"metrics.val/fg_focus_norm_{k}" for k in FOCUS},
    **{f"auc_{k}": f"metrics.val/mask_auc_{k}" for k in AUC},
}
"""Column → the ``mlflow.search_runs`` column holding its last value."""
TITLES = {
    **{f"focus_{k}": f"focus {v}" for k, v in FOCUS.items()},
    **{f"auc_{k}": f"AUC {v}" for k, v in AUC.items()},
    RATIO: "recon / Re-ID grad",
}
"""Column → its title in the Markdown / LaTeX table, in table order."""


def run_values(runs: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """One row per run: variant, seed and every column of ``TITLES`` (NaN where not logged).

    ``hist``: ``reports.load.metric_history`` of (at least) ``RATIO_KEY``."""
    out = runs[["variant", "seed"]].reset_index(drop=True)
    for col, src in SOURCES.items():
        out[col] = runs[src].astype(float).to_numpy() if src in runs else math.nan
    logged = hist[hist["key"] == RATIO_KEY] if len(hist) else hist
    ratio = logged.groupby(["variant", "seed"])["value"].mean() if len(logged) else {}
    out[RATIO] = [ratio.get((v, s), math.nan) for v, s in zip(out["variant"], out["seed"])]
    return out


def summarize(tr: TableRuns, per_run: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (table order): variant, variant_label, n and ``<col>_mean`` /
    ``<col>_std`` for every column that at least one variant logged."""
    rows = []
    for key in tr.order:
        sub = per_run[per_run["variant"] == key]
        label = tr.runs.loc[tr.runs["variant"] == key, "variant_label"].iloc[0]
        row: dict = {"variant": key, "variant_label": label, "n": len(sub)}
        for col in TITLES:
            values = sub[col].dropna()
            row[f"{col}_mean"] = values.mean() if len(values) else math.nan
            row[f"{col}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    absent = [c for c in TITLES if df[f"{c}_mean"].isna().all()]
    return df.drop(columns=[f"{c}_{s}" for c in absent for s in ("mean", "std")])


def present(summary: pd.DataFrame) -> list[str]:
    """The columns of ``summary``, in table order."""
    return [c for c in TITLES if f"{c}_mean" in summary]


def _two_digits(v: float) -> str:
    """Two significant digits in plain notation (``35``, ``0.54``, ``0.0040``); scientific only
    below 0.001, where plain notation would be a row of zeros."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    if abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.{max(0, 1 - math.floor(math.log10(abs(v))))}f}"


def sci(mean: float, std: float, latex: bool = False) -> str:
    """``0.0032 ± 0.0011``, ``35 ± 4.6``: two significant digits each, as the gradient ratio
    spans orders of magnitude."""
    if math.isnan(mean):
        return "--" if latex else "—"
    if math.isnan(std):
        return _two_digits(mean)
    sep = r"$\pm$" if latex else "±"
    return f"{_two_digits(mean)} {sep} {_two_digits(std)}"


def constant(summary: pd.DataFrame) -> dict[str, float]:
    """Columns with one value in every run that logs them, over at least two variants (e.g. the
    AUC of the fixed Gaussian mask), to be stated once rather than repeated as ``x ± 0.0``."""
    out = {}
    for col in present(summary):
        logged = summary[summary[f"{col}_mean"].notna()]
        means, stds = logged[f"{col}_mean"], logged[f"{col}_std"]
        if len(logged) > 1 and means.nunique() == 1 and stds.notna().all() and (stds == 0).all():
            out[col] = float(means.iloc[0])
    return out


def display(summary: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """The table as text cells: one row per variant, one column per logged diagnostic that
    varies (``constant`` columns are stated once, below the table)."""
    rows = []
    fixed = {} if latex else constant(summary)  # the LaTeX table keeps every column
    for rec in summary.to_dict("records"):
        row = {
            "Variant": latex_escape(rec["variant_label"]) if latex else rec["variant_label"],
            "seeds": rec["n"],
        }
        for col in (c for c in present(summary) if c not in fixed):
            title = TITLES[col]
            if latex:
                title = title.replace("′", "$'$").replace("·", r"$\cdot$")
            fmt = sci if col == RATIO else pm
            row[title] = fmt(rec[f"{col}_mean"], rec[f"{col}_std"], latex)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(summary: pd.DataFrame) -> str:
    text = markdown_cells(display(summary))
    fixed = constant(summary)
    if fixed:
        text += (
            "\n\nThe same in every run that logs it, so not a column: "
            + "; ".join(f"{TITLES[c]} {v:.1f}" for c, v in fixed.items())
            + "."
        )
    return text


def write_tables(summary: pd.DataFrame, out_dir: Path, caption: str) -> list[Path]:
    """``diagnostics.csv`` (numbers), ``.md`` and ``.tex``; nothing when no column was logged."""
    if not present(summary):
        return []
    paths = [out_dir / f"diagnostics.{ext}" for ext in ("csv", "md", "tex")]
    summary.to_csv(paths[0], index=False, float_format="%.6g")
    paths[1].write_text(markdown(summary) + "\n", encoding="utf-8")
    tex = display(summary, latex=True)
    paths[2].write_text(
        tex.style.hide(axis="index").to_latex(
            hrules=True,
            column_format="l" + "r" * (tex.shape[1] - 1),
            caption=latex_escape(caption),
            position="t",
        ),
        encoding="utf-8",
    )
    return paths


def _long(per_run: pd.DataFrame, titles: dict[str, str], name: str) -> pd.DataFrame:
    cols = {c: t for c, t in titles.items() if c in per_run}
    return (
        per_run[["variant", "seed", *cols]]
        .rename(columns=cols)
        .melt(id_vars=["variant", "seed"], var_name=name, value_name="value")
        .dropna()
    )


def _grouped(ax: plt.Axes, df: pd.DataFrame, order: list[str], hue: str) -> None:
    """Bars = mean over seeds per variant and ``hue``; error bars = std over seeds; a variant
    without values says "not logged"."""
    hue_order = list(dict.fromkeys(df[hue]))  # the column order of the table
    sns.barplot(
        data=df,
        x="variant",
        y="value",
        hue=hue,
        order=order,
        hue_order=hue_order,
        errorbar="sd",
        capsize=0.1,
        palette="muted",
        ax=ax,
    )
    for i, key in enumerate(order):
        if key not in set(df["variant"]):
            ax.text(
                i,
                0.5,
                "not logged",
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="center",
                rotation=90,
                fontsize=8,
                color="0.45",
            )


def decades(values: np.ndarray, reference: float = 1.0) -> tuple[float, float]:
    """The powers of ten that enclose every positive value and ``reference``, with room for
    the markers (a log axis that covers its data)."""
    v = np.asarray(values, dtype=float)
    v = np.append(v[np.isfinite(v) & (v > 0)], reference)
    return 10.0 ** math.floor(math.log10(v.min() / 1.5)), 10.0 ** math.ceil(
        math.log10(v.max() * 1.5)
    )


def _focus_panel(ax: plt.Axes, focus: pd.DataFrame, order: list[str], legend: dict) -> None:
    _grouped(ax, focus, order, "map")
    ax.axhline(0, color="0.2", ls="--", lw=1, label="uniform map (0)")
    ax.set(
        title="Normalised foreground focus per map",
        xlabel="",
        ylabel="focus (0 = uniform,\n100 = best possible)",
    )
    ax.legend(title="map", **legend)


def _auc_panel(ax: plt.Axes, auc: pd.DataFrame, order: list[str], legend: dict) -> None:
    _grouped(ax, auc, order, "mask")
    ax.axhline(50, color="0.2", ls="--", lw=1, label="chance (50)")
    ax.set(
        title="Pixel ROC AUC of the soft masks (TF-Dec's targets) against the person mask",
        xlabel="",
        ylabel="AUC × 100",
        ylim=(0, 100),
    )
    ax.legend(title="mask", **legend)


def _ratio_panel(
    ax: plt.Axes, ratio: pd.DataFrame, order: list[str], table: int, legend: dict
) -> None:
    """Seeds as dots and their mean as a diamond on a log axis (bars have no base on a log
    axis), limits at the decades around every value and 1; variants in the columns of the
    panels above, "no TF-Dec" where nothing was logged."""
    logged = [k for k in order if k in set(ratio["variant"])]
    sns.stripplot(
        data=ratio,
        x="variant",
        y=RATIO,
        order=order,
        hue="variant",
        hue_order=logged,
        palette=palette(table),
        size=4,
        jitter=False,
        legend=False,
        ax=ax,
    )  # no random jitter: a rebuild gives the same bytes
    sns.pointplot(
        data=ratio,
        x="variant",
        y=RATIO,
        order=order,
        estimator="mean",
        errorbar=None,
        linestyle="none",
        markers="D",
        color="0.15",
        markersize=5,
        ax=ax,
        label="mean over seeds",
    )
    for i, key in enumerate(order):
        if key not in logged:
            ax.text(
                i,
                0.5,
                "no TF-Dec",
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="center",
                rotation=90,
                fontsize=8,
                color="0.45",
            )
    ax.axhline(1, color="0.2", ls="--", lw=1, label="as strong as a Re-ID batch")
    ax.set_yscale("log")
    ax.set_ylim(*decades(ratio[RATIO].to_numpy()))
    ax.set(
        title="Encoder gradient: reconstruction batch / Re-ID batch",
        xlabel="variant",
        ylabel="ratio (log axis)",
    )
    ax.legend(**legend)


def figure(per_run: pd.DataFrame, order: list[str], table: int, stem: Path) -> list[Path]:
    """``draw`` as PNG and PDF; nothing when no diagnostic was logged."""
    fig = draw(per_run, order, table)
    return save(fig, stem) if fig is not None else []


def draw(per_run: pd.DataFrame, order: list[str], table: int) -> plt.Figure | None:
    """One panel per logged diagnostic, lettered in order: normalised focus per map, mask AUC
    per mask, the recon / Re-ID gradient ratio per TF-Dec variant (log axis). A diagnostic no
    run logged gets no panel. ``per_run``: ``run_values``."""
    focus = _long(per_run, {f"focus_{k}": v for k, v in FOCUS.items()}, "map")
    auc = _long(per_run, {f"auc_{k}": v for k, v in AUC.items()}, "mask")
    ratio = per_run[["variant", "seed", RATIO]].dropna()
    legend = {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
    panels = [
        (lambda ax: _focus_panel(ax, focus, order, legend)) if len(focus) else None,
        (lambda ax: _auc_panel(ax, auc, order, legend)) if len(auc) else None,
        (lambda ax: _ratio_panel(ax, ratio, order, table, legend)) if len(ratio) else None,
    ]
    panels = [p for p in panels if p is not None]
    if not panels:
        return None
    fig, axes = plt.subplots(
        len(panels),
        1,
        squeeze=False,
        figsize=(max(7.0, 0.9 * len(order) + 3.0), 0.4 + 2.9 * len(panels)),
    )
    for letter, ax, draw_panel in zip("abc", axes[:, 0], panels):
        draw_panel(ax)
        ax.set_title(f"({letter}) {ax.get_title()}")
        if len(order) > 6:
            ax.tick_params(axis="x", labelrotation=20)
    ratio_note = "; log panel: dots = seeds, diamonds = mean" if len(ratio) else ""
    fig.suptitle(
        f"Diagnostics per variant (bars = mean over seeds, error bars = std{ratio_note})",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
