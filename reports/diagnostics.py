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
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports.figures import palette, save  # noqa: E402
from reports.load import TableRuns  # noqa: E402
from reports.tables import latex_escape, markdown_cells, pm  # noqa: E402

FOCUS = {"stage3": "stage 3", "stage4": "stage 4", "attn": "A′", "global": "global"}
"""Maps of the normalised-focus columns (``val/fg_focus_norm_<key>``) → title."""
AUC = {"gm": "Gm", "pam": "PAm", "cam": "CAm", "gm_pam_cam": "Gm·PAm·CAm"}
"""Soft masks of the AUC columns (``val/mask_auc_<key>``) → title."""
RATIO = "recon_grad_ratio"
RATIO_KEY = f"train/{RATIO}"
SOURCES = {**{f"focus_{k}": f"metrics.val/fg_focus_norm_{k}" for k in FOCUS},
           **{f"auc_{k}": f"metrics.val/mask_auc_{k}" for k in AUC}}
"""Column → the ``mlflow.search_runs`` column holding its last value."""
TITLES = {**{f"focus_{k}": f"focus {v}" for k, v in FOCUS.items()},
          **{f"auc_{k}": f"AUC {v}" for k, v in AUC.items()}, RATIO: "recon / Re-ID grad"}
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


def sci(mean: float, std: float, latex: bool = False) -> str:
    """``3.2e-03 ± 1.1e-03``: the gradient ratio spans orders of magnitude."""
    if math.isnan(mean):
        return "--" if latex else "—"
    if math.isnan(std):
        return f"{mean:.1e}"
    sep = r"$\pm$" if latex else "±"
    return f"{mean:.1e} {sep} {std:.1e}"


def display(summary: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """The table as text cells: one row per variant, one column per logged diagnostic."""
    rows = []
    for rec in summary.to_dict("records"):
        row = {"Variant": latex_escape(rec["variant_label"]) if latex else rec["variant_label"],
               "seeds": rec["n"]}
        for col in present(summary):
            title = TITLES[col]
            if latex:
                title = title.replace("′", "$'$").replace("·", r"$\cdot$")
            fmt = sci if col == RATIO else pm
            row[title] = fmt(rec[f"{col}_mean"], rec[f"{col}_std"], latex)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(summary: pd.DataFrame) -> str:
    return markdown_cells(display(summary))


def write_tables(summary: pd.DataFrame, out_dir: Path, caption: str) -> list[Path]:
    """``diagnostics.csv`` (numbers), ``.md`` and ``.tex``; nothing when no column was logged."""
    if not present(summary):
        return []
    paths = [out_dir / f"diagnostics.{ext}" for ext in ("csv", "md", "tex")]
    summary.to_csv(paths[0], index=False, float_format="%.6g")
    paths[1].write_text(markdown(summary) + "\n", encoding="utf-8")
    tex = display(summary, latex=True)
    paths[2].write_text(tex.style.hide(axis="index").to_latex(
        hrules=True, column_format="l" + "r" * (tex.shape[1] - 1),
        caption=latex_escape(caption), position="t"), encoding="utf-8")
    return paths


def _long(per_run: pd.DataFrame, titles: dict[str, str], name: str) -> pd.DataFrame:
    cols = {c: t for c, t in titles.items() if c in per_run}
    return per_run[["variant", "seed", *cols]].rename(columns=cols).melt(
        id_vars=["variant", "seed"], var_name=name, value_name="value").dropna()


def _skip(ax: plt.Axes, title: str, why: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            color="0.3")
    ax.set_axis_off()


def _grouped(ax: plt.Axes, df: pd.DataFrame, order: list[str], hue: str) -> None:
    """Bars = mean over seeds per variant and ``hue``; error bars = std over seeds; a variant
    without values says "not logged"."""
    hue_order = list(dict.fromkeys(df[hue]))  # the column order of the table
    sns.barplot(data=df, x="variant", y="value", hue=hue, order=order, hue_order=hue_order,
                errorbar="sd", capsize=0.1, palette="muted", ax=ax)
    for i, key in enumerate(order):
        if key not in set(df["variant"]):
            ax.text(i, 0.5, "not logged", transform=ax.get_xaxis_transform(), ha="center",
                    va="center", rotation=90, fontsize=8, color="0.45")


def figure(per_run: pd.DataFrame, order: list[str], table: int, stem: Path) -> list[Path]:
    """(a) normalised focus per map, (b) mask AUC per mask, (c) the recon / Re-ID gradient
    ratio per TF-Dec variant (log axis); a panel without data says so. ``per_run``:
    ``run_values``. Nothing is drawn when no diagnostic was logged."""
    focus = _long(per_run, {f"focus_{k}": v for k, v in FOCUS.items()}, "map")
    auc = _long(per_run, {f"auc_{k}": v for k, v in AUC.items()}, "mask")
    ratio = per_run[["variant", "seed", RATIO]].dropna()
    if focus.empty and auc.empty and ratio.empty:
        return []
    fig, axes = plt.subplots(3, 1, figsize=(max(7.0, 0.9 * len(order) + 3.0), 8.6))
    legend = {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}

    title = "(a) Normalised foreground focus per map"
    if focus.empty:
        _skip(axes[0], title, "no val/fg_focus_norm_* logged (needs person masks)")
    else:
        _grouped(axes[0], focus, order, "map")
        axes[0].axhline(0, color="0.2", ls="--", lw=1, label="uniform map (0)")
        axes[0].set(title=title, xlabel="", ylabel="normalised focus")
        axes[0].text(0.01, 0.97, "100 = best map the map's resolution allows",
                     transform=axes[0].transAxes, va="top", fontsize=8, color="0.3")
        axes[0].legend(title="map", **legend)

    title = "(b) Pixel ROC AUC of TF-Dec's soft masks against the person mask"
    if auc.empty:
        _skip(axes[1], title, "no val/mask_auc_* logged (needs person masks)")
    else:
        _grouped(axes[1], auc, order, "mask")
        axes[1].axhline(50, color="0.2", ls="--", lw=1, label="chance (50)")
        axes[1].set(title=title, xlabel="", ylabel="AUC × 100", ylim=(0, 100))
        axes[1].legend(title="mask", **legend)

    title = "(c) Encoder gradient: reconstruction batch / Re-ID batch"
    if ratio.empty:
        _skip(axes[2], title, f"no {RATIO_KEY} logged (no TF-Dec variant, or older runs)")
    else:
        tf_order = [k for k in order if k in set(ratio["variant"])]
        sns.barplot(data=ratio, x="variant", y=RATIO, order=tf_order, hue="variant",
                    hue_order=tf_order, palette=palette(table), errorbar=None, alpha=0.85,
                    legend=False, ax=axes[2])
        sns.stripplot(data=ratio, x="variant", y=RATIO, order=tf_order, color="0.15", size=3,
                      jitter=False, ax=axes[2])  # no random jitter: a rebuild gives the same bytes
        axes[2].axhline(1, color="0.2", ls="--", lw=1, label="as strong as a Re-ID batch")
        axes[2].set_yscale("log")
        axes[2].set(title=title, xlabel="variant", ylabel="ratio (log)")
        axes[2].legend(**legend)
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle("Diagnostics per variant (bars = mean over seeds; error bars = std, "
                 "dots = seeds)", y=1.0)
    fig.tight_layout()
    return save(fig, stem)
