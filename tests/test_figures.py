"""The report figures draw what their captions say: intervals as error bars, integer ranks, log
axes that cover their values, no empty panels, and rank lists of two models on the same queries.

Each figure is drawn from a hand-made frame and its matplotlib artists are read back.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from ablations import ranklists
from reports import diagnostics_table, figures
from reports.wording import Wording

# A Table 2 summary as ``tables.add_uncertainty`` leaves it: Δ against the Baseline with its
# paired bootstrap interval (a: within noise, g: below 0), and the paper's Δ.
SUMMARY = pd.DataFrame(
    {
        "variant": ["base", "a", "g"],
        "variant_label": ["Base.", "(a) Base. + TF-Dec with Gm", "(g) Gm·PAm·CAm (FTN)"],
        "is_reference": [True, False, False],
        "d_rank1": [0.0, 1.5, -4.0],
        "d_rank1_lo": [math.nan, -2.0, -7.5],
        "d_rank1_hi": [math.nan, 5.0, -0.5],
        "d_mAP": [0.0, 0.5, -3.0],
        "d_mAP_lo": [math.nan, -1.0, -6.0],
        "d_mAP_hi": [math.nan, 2.5, -1.0],
        "paper_d_rank1": [0.0, 1.2, 2.0],
        "paper_d_mAP": [0.0, 1.3, 3.3],
    }
)


def _bars(ax: plt.Axes, vertical: bool) -> list[tuple[float, float]]:
    """(low, high) end of each error bar on ``ax``, in drawing order."""
    out = []
    for c in ax.containers:
        (segment,) = c.lines[2][0].get_segments()
        ends = segment[:, 1] if vertical else segment[:, 0]
        out.append((float(ends.min()), float(ends.max())))
    return out


def test_delta_figure_bars_are_the_bootstrap_intervals():
    fig = figures.draw_delta_intervals(SUMMARY, 2, "paper on market1501")
    axes = fig.axes[:2]
    for ax, m in zip(axes, ("rank1", "mAP")):
        assert _bars(ax, vertical=False) == [
            pytest.approx((SUMMARY.loc[i, f"d_{m}_lo"], SUMMARY.loc[i, f"d_{m}_hi"]))
            for i in (1, 2)
        ]
        dots = [c.lines[0].get_xdata()[0] for c in ax.containers]
        assert dots == list(SUMMARY[f"d_{m}"].iloc[1:])
        paper = next(c for c in ax.collections if c.get_gid() == "paper").get_offsets()[:, 0]
        assert list(paper) == list(SUMMARY[f"paper_d_{m}"].iloc[1:])  # the diamonds
    # Variants by label, top to bottom in table order; the Baseline is the reference, not a row.
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels == ["(a) Base. + TF-Dec with Gm", "(g) Gm·PAm·CAm (FTN)"]
    assert axes[0].get_ylim()[0] > axes[0].get_ylim()[1]
    assert axes[0].get_title() == "Δ R-1 against the Baseline"  # the paper's tables' words
    plt.close(fig)


def test_delta_figures_leave_out_the_reference_row_the_summary_names():
    """A summary that marks its reference row (``is_reference``) is compared with that row."""
    marked = SUMMARY.assign(is_reference=[False, True, False])
    assert list(figures.compared(marked)["variant"]) == ["base", "g"]
    assert list(figures.compared(SUMMARY)["variant"]) == ["a", "g"]
    fig = figures.draw_delta_intervals(marked, 2, "x", Wording("", "(a) Base. + TF-Dec with Gm"))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "Base.",
        "(g) Gm·PAm·CAm (FTN)",
    ]
    assert fig.axes[0].get_title() == "Δ R-1 against the reference row"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "0 = the reference row: (a) Base. + TF-Dec with Gm" in legend
    plt.close(fig)


def test_delta_figure_without_per_query_results_draws_no_bars():
    fig = figures.draw_delta_intervals(
        SUMMARY.drop(columns=["d_rank1_lo", "d_rank1_hi", "d_mAP_lo", "d_mAP_hi"]), 2, "x"
    )
    assert all(c.has_xerr is False for ax in fig.axes[:2] for c in ax.containers)
    assert "no interval" in fig.legends[0].get_texts()[0].get_text()
    plt.close(fig)
    assert figures.draw_delta_intervals(SUMMARY.iloc[:1], 2, "x") is None  # Baseline only


def test_delta_scatter_has_vertical_intervals_and_counts_those_that_exclude_zero():
    fig = figures.draw_delta_scatter(SUMMARY, 2, "paper on market1501")
    ax = fig.axes[0]
    assert _bars(ax, vertical=True) == [pytest.approx((-2.0, 5.0)), pytest.approx((-7.5, -0.5))]
    assert [c.lines[0].get_xdata()[0] for c in ax.containers] == [1.2, 2.0]  # x = paper's Δ
    # The statistics sit under the axis, where they cannot hide the end of a bar.
    assert (
        "Spearman" in ax.get_xlabel()
        and "1 of 2 intervals exclude 0" in ax.get_xlabel()
        and not ax.texts
    )
    # Variants are named once, in a legend, not by labels beside the points that could collide.
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(
        SUMMARY["variant_label"].iloc[1:]
    )
    plt.close(fig)


def _cmc(values: dict[tuple[str, int], float], ranks: int = 30) -> pd.DataFrame:
    """A CMC per (variant, seed) rising from ``values`` by one point per rank."""
    rows = [
        (v, s, k, start + k - 1) for (v, s), start in values.items() for k in range(1, ranks + 1)
    ]
    return pd.DataFrame(rows, columns=["variant", "seed", "rank", "value"])


def test_cmc_has_integer_rank_ticks_and_a_paired_difference_panel():
    cmc = _cmc({("base", 0): 50, ("base", 1): 54, ("a", 0): 52, ("a", 1): 57, ("a", 2): 90})
    fig = figures.draw_cmc(cmc, ["base", "a"], 2, reference="base")
    assert len(fig.axes) == 2
    for ax in fig.axes:
        ticks = ax.get_xticks()
        assert list(ticks) == [1, 5, 10, 15, 20]
        assert ax.get_xlim()[0] < 1 and ax.get_xlim()[1] >= 20
    # (b): a − base paired by seed: (2 + 3) / 2 at every rank; seed 2 has no Baseline pair.
    (line,) = [ln for ln in fig.axes[1].lines if len(ln.get_xdata()) == 20]
    assert np.allclose(line.get_ydata(), 2.5)
    assert list(figures.paired_cmc(cmc, "base").groupby("seed").size()) == [30, 30]
    plt.close(fig)
    alone = figures.draw_cmc(cmc[cmc["variant"] == "a"], ["base", "a"], 2, reference="base")
    assert len(alone.axes) == 1
    plt.close(alone)
    # A study's own reference row takes the Baseline's place: base − a = −2.5 at every rank.
    own = figures.draw_cmc(cmc, ["a", "base"], 2, reference="a", words=Wording("", "a"))
    (line,) = [ln for ln in own.axes[1].lines if len(ln.get_xdata()) == 20]
    assert np.allclose(line.get_ydata(), -2.5) and own.axes[1].get_title() == "base"
    plt.close(own)


def _per_run(focus: bool, auc: bool, ratio: tuple[float, ...]) -> pd.DataFrame:
    rows = []
    for i, (variant, r) in enumerate(zip(["c", "g", "g"], ratio or (math.nan,) * 3)):
        row = {"variant": variant, "seed": i}
        for col in diagnostics_table.TITLES:
            row[col] = math.nan
        if focus:
            row["focus_stage3"] = 10.0 + i
        if auc:
            row["auc_gm"] = 60.0 + i
        row[diagnostics_table.RATIO] = r
        rows.append(row)
    return pd.DataFrame(rows)


def test_diagnostics_log_axis_covers_its_values_and_panels_without_data_are_left_out():
    fig = diagnostics_table.draw(_per_run(True, True, (4e-3, 32.0, 41.0)), ["base", "c", "g"], 2)
    assert [ax.get_title()[:4] for ax in fig.axes] == ["(a) ", "(b) ", "(c) "]
    log = fig.axes[2]
    lo, hi = log.get_ylim()
    assert log.get_yscale() == "log" and lo <= 4e-3 and hi >= 41.0 and lo > 0
    assert (lo, hi) == pytest.approx((1e-3, 100.0))  # whole decades around the values and 1
    plt.close(fig)
    # Table 1: no TF-Dec, so no gradient ratio: two panels, none of them a placeholder.
    fig = diagnostics_table.draw(_per_run(True, True, ()), ["base", "c", "g"], 1)
    assert len(fig.axes) == 2 and all(ax.axison for ax in fig.axes)
    assert "Encoder gradient" not in " ".join(ax.get_title() for ax in fig.axes)
    plt.close(fig)
    assert diagnostics_table.draw(_per_run(False, False, ()), ["c", "g"], 1) is None
    assert diagnostics_table.decades(np.array([30.0, 40.0])) == pytest.approx((0.1, 100.0))


def test_rank_lists_of_two_models_show_the_same_queries(tmp_path, monkeypatch):
    from fixtures_layouts import GALLERY, QUERY, TRAIN, write_market_layout

    from ftn_core.data.loading import load_dataset

    ds = load_dataset(
        "market1501",
        str(write_market_layout(tmp_path / "market1501", TRAIN, QUERY, GALLERY).parent),
    )
    # The Baseline ranks query 0 best; the other model stores its queries in another order and
    # ranks query 1 best, so left to itself it would draw other queries first.
    base = {
        "index": np.array([0, 1]),
        "ap": np.array([1.0, 0.2]),
        "top10": np.array([[2, 0, 1], [1, 2, 0]]),
    }
    other = {
        "index": np.array([1, 0]),
        "ap": np.array([0.9, 0.4]),
        "top10": np.array([[1, 0, 2], [0, 1, 2]]),
    }
    read: list[str] = []
    real = ranklists._image
    monkeypatch.setattr(ranklists, "_image", lambda p: read.append(str(p)) or real(p))
    queries = {str(q.path): i for i, q in enumerate(ds.query)}

    def drawn(arrays, picks=None) -> list[int]:
        read.clear()
        ranklists.draw(arrays, ds, tmp_path / "rl.png", "t", per_group=1, picks=picks)
        return [queries[p] for p in read if p in queries]

    picks = ranklists.pick(base, per_group=1)
    assert picks == [("best", 0), ("median", 1)]  # dataset query indices, not rows
    assert drawn(base, picks) == drawn(other, picks) == [0, 1]
    assert drawn(other) == [1, 0]  # its own picks would differ


def test_heat_map_figures_keep_full_colour_and_charts_a_palette(tmp_path):
    """A smooth heat map over 256 colours: the chart PNG is a 256-colour palette, the photo
    figure keeps every shade (a palette cuts the gradient into visible bands)."""
    from PIL import Image

    def gradient():
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.imshow(
            np.linspace(0, 1, 300 * 300).reshape(300, 300),
            cmap="jet",
            alpha=0.45,
            interpolation="none",
        )
        return fig

    chart = figures.save(gradient(), tmp_path / "chart")[0]
    photo = figures.save(gradient(), tmp_path / "photo", palette=False)[0]
    assert Image.open(chart).mode == "P"
    shades = Image.open(photo).convert("RGB").getcolors(maxcolors=1 << 20)
    assert Image.open(photo).mode == "RGB" and len(shades) > 256
