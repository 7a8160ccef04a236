"""Reports built from an MLflow store laid out as the runner writes it (tests/fake_store.py).

The numbers are chosen so that means, stds, Δs and Spearman's ρ can be checked by hand.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_store import NUM_CLASSES, FakeRun, log_experiment, new_store
from mlflow import MlflowClient

from ablations.store import connect
from ftn_core.errors import FTNError
from reports import build, cells, diagnostics_table, summary, tables, verdicts
from reports.load import find_experiments, load_runs, metric_history

REPO = Path(__file__).resolve().parents[1]


def _val(rank1: float, mAP: float, attn: bool = False) -> dict[str, float]:
    out = {
        "rank1": rank1,
        "rank5": rank1 + 10,
        "rank10": rank1 + 15,
        "mAP": mAP,
        "mINP": mAP - 10,
        "fg_focus": 40.0,
        "fg_focus_stage3": 30.0,
        "fg_focus_global": 40.0,
        "fg_focus_local": 45.0,
    }
    if attn:
        out["fg_focus_attn"] = 55.0
    return out


# (variant, seed) → (R-1, mAP). Baseline 55 ± 7.07 / 42; a +1 / +4; c −6 / −3 (worse); g +16 / +19.
# Controls: base_matched −2 / −1 against the Baseline; oracle +4 / +3 against g.
RESULTS = {
    ("base", 0): (50, 40),
    ("base", 1): (60, 44),
    ("a", 0): (55, 45),
    ("a", 1): (57, 47),
    ("c", 0): (48, 38),
    ("c", 1): (50, 40),
    ("g", 0): (70, 60),
    ("g", 1): (72, 62),
    ("base_matched", 0): (52, 41),
    ("base_matched", 1): (54, 41),
    ("oracle", 0): (74, 63),
    ("oracle", 1): (76, 65),
}
ORDER = ["base", "a", "c", "g", "base_matched", "oracle"]
# Diagnostics: base and a are runs from before them (nothing logged); base_matched has no CFA
# (no attn, PAm, CAm) and no TF-Dec (no gradient ratio). Seed 1 = seed 0 + 4, so every mean is
# seed 0's value + 2 and every std is √8 = 2.83.
OFFSET = {"c": 0.0, "g": 10.0, "base_matched": 20.0, "oracle": 30.0}
# train/recon_grad_ratio per logged epoch; oracle has 3 epochs, the first a frozen warm-up.
GRAD = {
    ("c", 0): (2e-3, 4e-3),
    ("c", 1): (4e-3, 6e-3),
    ("g", 0): (1e-2, 3e-2),
    ("g", 1): (3e-2, 5e-2),
    ("oracle", 0): (0.1, 0.3),
    ("oracle", 1): (0.2, 0.4),
}


def _diag(variant: str, seed: int) -> dict[str, float]:
    if variant not in OFFSET:
        return {}
    x = OFFSET[variant] + 4 * seed
    out = {
        "fg_focus_norm_stage3": 10 + x,
        "fg_focus_norm_stage4": -5 + x,
        "fg_focus_norm_global": 40 + x,
        "fg_focus_norm_local": 99.0,
        "mask_auc_gm": 50 + x,
    }
    if variant != "base_matched":
        out |= {
            "fg_focus_norm_attn": 30 + x,
            "mask_auc_pam": 60 + x,
            "mask_auc_cam": 45 + x,
            "mask_auc_gm_pam_cam": 55 + x,
        }
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    uri = new_store(folder)
    runs = [FakeRun("base", 1, _val(10, 10))]  # older duplicate of base-s1: must be left out
    runs += [
        FakeRun(
            v,
            s,
            _val(r1, m, attn=v in ("c", "g", "oracle")) | _diag(v, s),
            epochs=3 if v == "oracle" else 2,
            grad_ratio=GRAD.get((v, s), ()),
        )
        for (v, s), (r1, m) in RESULTS.items()
    ]
    runs.append(FakeRun("g", 0, _val(99, 99, True), status="FAILED"))
    runs.append(FakeRun("b", 0, _val(99, 99, True), status="RUNNING"))
    log_experiment(uri, folder, runs, table=2)
    # Table 1: missing metrics and artifacts, one seed each.
    t1 = [
        FakeRun("base", 0, {"rank1": 40.0, "mAP": 30.0}, artifacts=False),
        FakeRun("cfa", 0, {"rank1": 45.0, "mAP": 31.0, "mINP": 20.0}, artifacts=False),
    ]
    log_experiment(uri, folder, t1, table=1)
    return uri, folder


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    uri, _ = store
    out = tmp_path_factory.mktemp("out")
    assert build.main(["--tracking-uri", uri, "--out", str(out), "--table", "2"]) == 0
    return uri, out / "table2" / "synthetic-tiny"


def test_load_keeps_finished_newest_per_variant_seed(store):
    client, _ = connect(store[0])
    exp = find_experiments(client, name="table2-synthetic-tiny")[0]
    tr = load_runs(client, exp)
    assert (tr.table, tr.dataset, tr.preset) == (2, "synthetic", "tiny")
    assert sorted(zip(tr.runs["variant"], tr.runs["seed"])) == sorted(RESULTS)
    assert tr.order == ORDER  # the paper's row order, controls last
    base1 = tr.runs[(tr.runs["variant"] == "base") & (tr.runs["seed"] == 1)]
    assert base1["metrics.val/rank1"].item() == 60  # the newer of the two FINISHED base-s1
    assert tr.left_out == [
        "1 FAILED run(s) (g-s0)",
        "1 RUNNING run(s): training now, or stopped unmarked, which `run.py` resumes (b-s0)",
        "1 older duplicate(s) of a newer FINISHED run (base-s1)",
    ]
    assert tr.parent_run_id is not None


def test_runs_of_a_row_trained_another_way_are_never_pooled(tmp_path):
    """Seeds 0 and 1 of `cfa` with 2 epochs, then seed 0 again and seed 2 with 3: the row's
    newest setting (3 epochs) is reported, and its 2-epoch seed 1 is left out, not pooled."""
    uri = new_store(tmp_path)
    log_experiment(
        uri,
        tmp_path,
        [
            FakeRun("cfa", 0, _val(10, 10)),
            FakeRun("cfa", 1, _val(20, 20)),
            FakeRun("base", 0, _val(30, 30)),
            FakeRun("cfa", 0, _val(40, 40), sets={"train.epochs": 3}),
            FakeRun("cfa", 2, _val(50, 50), sets={"train.epochs": 3}),
        ],
        table=1,
    )
    client, _ = connect(uri)
    tr = load_runs(client, find_experiments(client, table=1)[0])
    assert sorted(zip(tr.runs["variant"], tr.runs["seed"], tr.runs["metrics.val/rank1"])) == [
        ("base", 0, 30),
        ("cfa", 0, 40),
        ("cfa", 2, 50),
    ]
    assert tr.left_out == [
        "2 run(s) trained with another setting of their row than its newest run (the study "
        "file or --set changed since: train them again to include them) (cfa-s1, cfa-s0)"
    ]


def test_runs_of_another_precision_or_init_are_never_pooled(tmp_path):
    """bf16 runs (a CPU with native bf16, or a GPU) and fp32 runs of one configuration, or runs
    from two weights files: only those alike with the newest run are reported."""
    uri = new_store(tmp_path)
    fp32, bf16 = {"precision": "fp32"}, {"precision": "bf16"}
    log_experiment(
        uri,
        tmp_path,
        [
            FakeRun("base", 0, _val(10, 10), extra_tags=fp32),
            FakeRun("cfa", 0, _val(20, 20), extra_tags=fp32),
            FakeRun("base", 1, _val(30, 30)),  # older code: no tag, kept
            FakeRun("base", 2, _val(40, 40), extra_tags=bf16),
            FakeRun("cfa", 2, _val(50, 50), extra_tags=bf16),
        ],
        table=1,
    )
    client, _ = connect(uri)
    tr = load_runs(client, find_experiments(client, table=1)[0])
    assert sorted(zip(tr.runs["variant"], tr.runs["seed"])) == [
        ("base", 1),
        ("base", 2),
        ("cfa", 2),
    ]
    assert tr.left_out == [
        "2 run(s) computed in another precision than the newest run (precision fp32, "
        "newest bf16): train them again alike to include them (cfa-s0, base-s0)"
    ]
    other = tmp_path / "other"
    other.mkdir()
    uri = new_store(other)
    log_experiment(
        uri,
        other,
        [
            FakeRun("base", 0, _val(10, 10), extra_tags={"init_digest": "aaaa"}),
            FakeRun("base", 1, _val(20, 20)),
            FakeRun("cfa", 1, _val(30, 30), extra_tags={"init_digest": "bbbb"}),
        ],
        table=1,
    )
    client, _ = connect(uri)
    tr = load_runs(client, find_experiments(client, table=1)[0])
    assert list(tr.runs["variant"]) == ["cfa"]
    assert (
        "started from other backbone weights than the newest run (init_digest aaaa, scratch, newest bbbb)"
        in tr.left_out[0]
    )


def test_a_row_whose_runs_are_all_left_out_is_not_called_not_run(tmp_path):
    from reports.claims import _unjudged

    uri = new_store(tmp_path)
    fp32, bf16 = {"precision": "fp32"}, {"precision": "bf16"}
    log_experiment(
        uri,
        tmp_path,
        [
            FakeRun("cfa", 0, _val(20, 20), extra_tags=fp32),
            FakeRun("base", 0, _val(10, 10), extra_tags=bf16),  # the newest: bf16 wins
        ],
        table=1,
    )
    client, _ = connect(uri)
    tr = load_runs(client, find_experiments(client, table=1)[0])
    assert list(tr.runs["variant"]) == ["base"] and tr.dropped == ("cfa",)
    assert _unjudged(tr, {}, (("cfa", "base"), ("pamcam", "base"))) == {
        ("cfa", "base"): ["cfa's runs all left out (the report's notes say why)"],
        ("pamcam", "base"): ["pamcam not run"],
    }


def test_runs_of_older_code_pool_among_themselves_but_never_with_current_ones(tmp_path):
    """A run whose logged config no longer hashes to its own config_hash was computed by older
    code: `base`'s two such seeds give way to its current seed 2 (named for what they are), and
    `cfa`, all older, keeps both its seeds. How often a run evaluated on the way is not a setting."""
    uri = new_store(tmp_path)
    old = {"config_hash": "0123456789ab"}
    log_experiment(
        uri,
        tmp_path,
        [
            FakeRun("base", 0, _val(10, 10), extra_tags=old),
            FakeRun("base", 1, _val(20, 20), extra_tags=old),
            FakeRun("cfa", 0, _val(30, 30), extra_tags=old),
            FakeRun("cfa", 1, _val(40, 40), extra_tags=old),
            FakeRun("base", 2, _val(50, 50), sets={"train.eval_every": 0}),
        ],
        table=1,
    )
    client, _ = connect(uri)
    tr = load_runs(client, find_experiments(client, table=1)[0])
    assert sorted(zip(tr.runs["variant"], tr.runs["seed"])) == [("base", 2), ("cfa", 0), ("cfa", 1)]
    assert tr.left_out == [
        "2 run(s) trained by older code that computes something else for the same "
        "configuration (train them again to include them) (base-s1, base-s0)"
    ]
    log_experiment(
        uri, tmp_path, [FakeRun("base", 3, _val(60, 60))], table=1
    )  # eval_every as the preset has it
    tr = load_runs(client, find_experiments(client, table=1)[0])
    assert sorted(tr.runs.loc[tr.runs["variant"] == "base", "seed"]) == [2, 3]


def test_a_report_in_the_repositorys_reports_folder_says_its_runs_are_not_shipped(
    tmp_path, monkeypatch
):
    """The committed reports' runs live in a store the repository does not ship: their page says
    so beside the UI link, so a reader of a clone is not sent to `make ui` for runs that are not
    there; a report written anywhere else does not."""
    from reports import index

    uri = new_store(tmp_path / "store")
    log_experiment(
        uri,
        tmp_path / "store",
        [
            FakeRun("base", 0, _val(50, 40)),
            FakeRun("cfa", 0, _val(52, 41)),
            FakeRun("base", 1, _val(51, 40)),
        ],
        table=1,
    )
    monkeypatch.setattr(index, "REPO", tmp_path)
    pages = {}
    for out in ("reports", "elsewhere"):
        assert (
            build.main(
                [
                    "--tracking-uri",
                    uri,
                    "--out",
                    str(tmp_path / out),
                    "--table",
                    "1",
                    "--no-visual",
                    "--no-efficiency",
                    "--no-log",
                ]
            )
            == 0
        )
        pages[out] = (tmp_path / out / "table1" / "synthetic-tiny" / "README.md").read_text()
    ui = "Runs in the MLflow UI: `python -m ablations.ui --tracking-uri"
    assert (
        ui in pages["reports"]
        and "A clone of the repository does not hold these runs" in pages["reports"]
    )
    assert ui in pages["elsewhere"] and "A clone of the repository" not in pages["elsewhere"]
    # Rows with different numbers of seeds are not described as a full grid.
    assert (
        "3 FINISHED child runs, 2 variants, 1 to 2 seeds each, from seeds (0 1)."
        in pages["reports"]
    )
    index = (tmp_path / "reports" / "table1" / "README.md").read_text()
    assert (
        "Written by `python reports/build.py --table 1` from the runs in an MLflow store" in index
    )


def test_summary_means_std_and_deltas_by_hand(store):
    client, _ = connect(store[0])
    tr = load_runs(client, find_experiments(client, name="table2-synthetic-tiny")[0])
    s = summary.summarize(tr).set_index("variant")
    assert s.loc["base", "rank1_mean"] == 55 and s.loc["base", "mAP_mean"] == 42
    assert s.loc["base", "rank1_std"] == pytest.approx(math.sqrt(50))  # ddof = 1
    assert s.loc["base", "rank5_mean"] == 65 and s.loc["g", "mINP_mean"] == 51
    assert list(s["d_rank1"]) == [0, 1, -6, 16, -2, 20]
    assert list(s["d_mAP"]) == [0, 4, -3, 19, -1, 22]
    assert list(s["control"]) == [False] * 4 + [True] * 2
    # The paper's Market-1501 rows (synthetic data): Table 2 base 94.5/85.8, a 95.7/87.1.
    assert s.loc["a", "paper_rank1"] == 95.7 and s.loc["g", "paper_mAP"] == 89.1
    assert s.loc["a", "paper_d_rank1"] == pytest.approx(1.2)
    assert s.loc["c", "paper_d_mAP"] == pytest.approx(2.4)
    # Spearman by hand: R-1 orders agree (a, c, g → 2, 1, 3 both) → 1; mAP ours (2, 1, 3) vs
    # paper (1, 2, 3): d = (1, −1, 0), ρ = 1 − 6·2 / (3·8) = 0.5.
    assert summary.rank_agreement(s.reset_index(), "rank1") == (pytest.approx(1.0), 3)
    assert summary.rank_agreement(s.reset_index(), "mAP") == (pytest.approx(0.5), 3)
    two = s.reset_index()[s.reset_index()["variant"].isin(["base", "a", "g"])]
    rho, n = summary.rank_agreement(two, "mAP")
    assert math.isnan(rho) and n == 2


def test_table_files(report):
    _, folder = report
    csv = pd.read_csv(folder / "table.csv").set_index("variant")
    assert csv.loc["c", "d_rank1"] == -6 and csv.loc["g", "n"] == 2
    md = (folder / "table.md").read_text()
    assert "| Base." in md and "55.0 ± 7.1" in md and "+16.0" in md and "−6.0" in md
    first = md.split("\n\n")[0].splitlines()[
        0
    ]  # it opens with the compact table, every column after
    assert first.count("|") - 1 <= 10 and "verdict" in first and "\nEvery column" in md
    tex = (folder / "table.tex").read_text()
    assert "\\begin{tabular}" in tex and "$55.0 \\pm 7.1$" in tex and "$-6.0$" in tex


def _cells(md: str) -> dict[str, dict[str, str]]:
    """A Markdown table as {first cell: {column title: cell}}."""
    lines = [[c.strip() for c in line.split("|")[1:-1]] for line in md.strip().splitlines()]
    return {row[0]: dict(zip(lines[0], row)) for row in lines[2:]}


def test_controls_have_no_paper_numbers_and_stay_out_of_rho(store):
    client, _ = connect(store[0])
    tr = load_runs(client, find_experiments(client, name="table2-synthetic-tiny")[0])
    s = summary.summarize(tr)
    shown = _cells(tables.markdown(s))
    control = shown["Base. with TF-Dec's Re-ID updates (control)"]
    paper_cols = ("paper R-1", "paper mAP", "paper ΔR-1", "paper ΔmAP")
    assert [control[k] for k in paper_cols] == ["—"] * 4
    assert (control["ΔR-1"], control["ΔmAP"]) == ("−2.0", "−1.0")  # Δ vs our Baseline is shown
    assert shown["(g) with the true person mask as target (control)"]["ΔR-1"] == "+20.0"
    # Give the controls paper Δs that would break the perfect R-1 agreement: ρ must not move.
    faked = s.copy()
    faked.loc[faked["variant"] == "base_matched", "paper_d_rank1"] = 50.0
    faked.loc[faked["variant"] == "oracle", "paper_d_rank1"] = -50.0
    assert summary.rank_agreement(faked, "rank1") == (pytest.approx(1.0), 3)
    # Without the control flag they would count: ours c, bm, a, g, oracle = ranks 1–5, paper
    # oracle, c, a, g, bm; d = (−1, −3, 0, 0, 4), ρ = 1 − 6·26 / (5·24) = −0.3.
    assert summary.rank_agreement(faked.assign(control=False), "rank1") == (pytest.approx(-0.3), 5)
    from reports import index

    assert index._agreement(-0.72, 7, "R-1") == (
        "R-1: Spearman ρ = −0.72 over 7 variants — our ordering is reversed against the paper's"
    )  # a true minus


def test_paper_numbers_are_there_only_when_some_row_has_a_paper_delta(store):
    client, _ = connect(store[0])
    s = summary.summarize(
        load_runs(client, find_experiments(client, name="table2-synthetic-tiny")[0])
    )
    assert tables.has_paper_numbers(s)
    own = s.assign(paper_d_rank1=float("nan"), paper_d_mAP=float("nan"))  # a study of one's own
    assert not tables.has_paper_numbers(own)
    assert not tables.has_paper_numbers(s.drop(columns=["paper_d_rank1", "paper_d_mAP"]))
    assert "paper Δ R-1" in tables.answer(s) and "paper Δ R-1" not in tables.answer(own)


def test_the_opening_table_gives_each_row_its_paired_seeds_and_its_means_over_them(store):
    client, _ = connect(store[0])
    tr = load_runs(client, find_experiments(client, name="table2-synthetic-tiny")[0])
    even = tables.answer(summary.summarize(tr))
    assert set(even["seeds"]) == {"0, 1"} and "ref. R-1 on these seeds" not in even
    tr.runs = tr.runs[~((tr.runs["variant"] == "c") & (tr.runs["seed"] == 1))]
    s = summary.summarize(tr)
    shown = tables.answer(s).set_index("Variant")
    c = s[s["variant"] == "c"].iloc[0]
    assert shown.loc[c.variant_label, "seeds"] == "0" and shown.loc["Base.", "seeds"] == "0, 1"
    runs = tr.runs.set_index(["variant", "seed"])["metrics.val/rank1"]
    # c over its one paired seed, the reference over the same seed: their difference is the Δ
    assert shown.loc[c.variant_label, "R-1"] == cells.pm(runs["c", 0], float("nan"))
    ref_on_c = shown.loc[c.variant_label, "ref. R-1 on these seeds"]
    assert ref_on_c == f"{runs['base', 0]:.1f}"
    assert c.d_rank1 == pytest.approx(runs["c", 0] - runs["base", 0])
    assert shown.loc["Base.", "R-1"] == cells.pm(runs["base"].mean(), runs["base"].std())
    assert cells.seed_list("0 1 2 3 5 7 8") == "0–3, 5, 7, 8"


def test_numbers_that_round_to_zero_print_without_a_minus():
    assert cells.delta(-0.04) == "+0.0" and cells.delta(-0.06) == "−0.1"
    assert cells.interval(-0.04, 0.7) == "[+0.0, +0.7]" and cells.pm(-0.04, 1.0) == "0.0 ± 1.0"
    assert cells.pm(-2.84, 6.2) == "−2.8 ± 6.2"


def test_control_verdicts(report, store):
    _, folder = report
    text = (folder / "README.md").read_text()
    # base_matched: R-1 (52, 54) vs (50, 60): −2; mAP (41, 41) vs (40, 44): −1. These runs have
    # no per-query results: no interval, so no verdict, only the numbers. (g) gains, so there
    # is nothing to explain.
    no_verdict = verdicts.NO_INTERVAL
    assert (
        "**Base. with TF-Dec's Re-ID updates (control)** scores Δ R-1 −2.0, Δ mAP −1.0 "
        f"against our Baseline{no_verdict}. (g) does not "
        "lose R-1 against the Baseline (+16.0), so there is no R-1 loss to explain; (g) does "
        "not lose mAP against the Baseline (+19.0), so there is no mAP loss to "
        "explain."
    ) in text
    # oracle vs g: 75 − 71 = +4, 64 − 61 = +3; no interval, so neither headroom nor its absence.
    assert (
        "**(g) with the true person mask as target (control)** scores Δ R-1 +4.0, Δ mAP +3.0 "
        f"against (g) (Δ R-1 +20.0, Δ mAP +22.0 against our Baseline){no_verdict}."
    ) in text
    assert "seed spread (" not in text and "headroom" not in text
    assert "(control)** does **not** beat" not in text and "(control)** beats" not in text
    assert "Spearman ρ = +1.00 over 3 variants" in text  # controls not counted
    # Where (g) loses: base_matched's −2 of (g)'s −6 R-1 is 33 %; a control that gains mAP
    # explains none of (g)'s mAP loss.
    client, _ = connect(store[0])
    exp = find_experiments(client, name="table2-synthetic-tiny")[0]
    s = summary.summarize(load_runs(client, exp))
    s.loc[s["variant"] == "g", ["d_rank1", "d_mAP"]] = [-6.0, -2.0]
    s.loc[s["variant"] == "base_matched", "d_mAP"] = 1.0
    line = next(v for v in verdicts.verdicts(s) if v.startswith("**Base. with"))
    assert line.endswith(
        ". It explains 33 % of (g)'s R-1 loss (−2.0 of −6.0); "
        "it costs no mAP (+1.0), so it explains none of (g)'s "
        "mAP loss (−2.0)."
    )


def test_diagnostics_table_by_hand(report, store):
    _, folder = report
    csv = pd.read_csv(folder / "diagnostics.csv").set_index("variant")
    assert list(csv.index) == ORDER
    means = [c for c in csv.columns if c.endswith("_mean")]
    assert means == [
        "focus_stage3_mean",
        "focus_stage4_mean",
        "focus_attn_mean",
        "focus_global_mean",
        "auc_gm_mean",
        "auc_pam_mean",
        "auc_cam_mean",
        "auc_gm_pam_cam_mean",
        "recon_grad_ratio_mean",
    ]  # no "local": not a column
    # Mean = seed 0's value + 2, std = √8 (see _diag).
    assert csv.loc["c", "focus_stage3_mean"] == pytest.approx(12)
    assert csv.loc["g", "focus_stage4_mean"] == pytest.approx(7)
    assert csv.loc["oracle", "focus_attn_mean"] == pytest.approx(62)
    assert csv.loc["base_matched", "auc_gm_mean"] == pytest.approx(72)
    assert csv.loc["g", "auc_gm_pam_cam_mean"] == pytest.approx(67)
    assert csv.loc["c", "focus_global_std"] == pytest.approx(math.sqrt(8), abs=1e-4)
    assert csv.loc[["base", "a"]].drop(columns=["variant_label", "n"]).isna().all().all()
    assert (
        csv.loc[
            "base_matched",
            ["focus_attn_mean", "auc_pam_mean", "auc_cam_mean", "recon_grad_ratio_mean"],
        ]
        .isna()
        .all()
    )
    # Gradient ratio: per run the mean over its logged epochs, then over seeds.
    assert csv.loc["c", "recon_grad_ratio_mean"] == pytest.approx(4e-3)  # (3e-3 + 5e-3) / 2
    assert csv.loc["g", "recon_grad_ratio_mean"] == pytest.approx(3e-2)
    assert csv.loc["oracle", "recon_grad_ratio_mean"] == pytest.approx(0.25)  # (0.2 + 0.3) / 2
    assert csv.loc["oracle", "recon_grad_ratio_std"] == pytest.approx(math.sqrt(0.005), abs=1e-6)
    client, _ = connect(store[0])
    tr = load_runs(client, find_experiments(client, name="table2-synthetic-tiny")[0])
    hist = metric_history(client, tr.runs, (diagnostics_table.RATIO_KEY,))
    per_run = diagnostics_table.run_values(tr.runs, hist).set_index(["variant", "seed"])
    assert len(hist[(hist["variant"] == "oracle") & (hist["seed"] == 0)]) == 2  # not epoch 1
    assert per_run.loc[("oracle", 0), "recon_grad_ratio"] == pytest.approx(0.2)
    assert per_run.loc[("c", 1), "recon_grad_ratio"] == pytest.approx(5e-3)  # not the last 6e-3

    cells = _cells((folder / "diagnostics.md").read_text())
    assert cells["(c) Gm"]["focus stage 3"] == "12.0 ± 2.8"
    assert cells["(c) Gm"]["focus stage 4"] == "−3.0 ± 2.8"  # below 0: prefers the background
    assert cells["(c) Gm"]["recon / Re-ID grad"] == "0.0040 ± 0.0014"
    assert (
        cells["(g) with the true person mask as target (control)"]["recon / Re-ID grad"]
        == "0.25 ± 0.071"
    )
    assert cells["Base."]["focus A′"] == "—" and cells["Base."]["recon / Re-ID grad"] == "—"
    assert cells["Base. with TF-Dec's Re-ID updates (control)"]["AUC Gm"] == "72.0 ± 2.8"
    assert cells["Base. with TF-Dec's Re-ID updates (control)"]["AUC Gm·PAm·CAm"] == "—"
    tex = (folder / "diagnostics.tex").read_text()
    assert "AUC Gm$\\cdot$PAm$\\cdot$CAm" in tex and "0.0040 $\\pm$ 0.0014" in tex
    text = (folder / "README.md").read_text()
    section = text.split("## Diagnostics\n")[1].split("\n## ")[0]
    assert "| (c) Gm " in section and "uniform map scores 0" in section and "50 = chance" in section
    assert "](diagnostics.png)" in section and "[CSV](diagnostics.csv)" in section
    png = folder / "diagnostics.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size < 200_000
    assert (folder / "diagnostics.pdf").read_bytes()[:4] == b"%PDF"


def test_readme_is_honest_and_complete(report):
    _, folder = report
    text = (folder / "README.md").read_text()
    # No per-query results in this store: each row gives its numbers and says there is no
    # verdict; no sign or seed spread stands in for the paired interval.
    assert f"**(c) Gm**: Δ R-1 −6.0, Δ mAP −3.0; paper +1.0 / +2.4{verdicts.NO_INTERVAL}." in text
    assert "**(g) Gm·PAm·CAm (FTN)**: Δ R-1 +16.0, Δ mAP +19.0" in text
    assert "beats our Baseline" not in text and "seed spread (" not in text
    # Run-hours: each kept run logs train/epoch_seconds = 1 per epoch (oracle 3 epochs, others 2).
    seconds = sum(3 if v == "oracle" else 2 for v, _ in RESULTS)
    assert f"Training took 0.0 run-hours ({seconds} s): the sum of the epochs' wall times" in text
    assert "1 FAILED run(s) (g-s0)" in text and "older duplicate" in text
    assert "Market-1501 numbers are shown instead" in text
    assert "Spearman ρ = +1.00 over 3 variants" in text
    assert "12 FINISHED child runs, 6 variants × 2 seeds (0 1)." in text
    # It opens with the compact table: eight columns, the Baseline as the reference.
    head = next(line for line in text.splitlines() if line.startswith("| Variant"))
    assert [c.strip() for c in head.strip("|").split("|")] == [
        "Variant",
        "seeds",
        "R-1",
        "mAP",
        "Δ R-1 [95 % CI]",
        "Δ mAP [95 % CI]",
        "paper Δ R-1",
        "paper Δ mAP",
        "verdict",
    ]
    assert "| reference |" in text and text.index(head) < text.index("### What the numbers say")
    for stem in ("delta_ci", "delta", "cmc", "curves", "stage3_vs_cfa", "global_local", "recon"):
        assert f"]({stem}.png)" in text, stem
        png, pdf = folder / f"{stem}.png", folder / f"{stem}.pdf"
        assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
        assert png.stat().st_size < 200_000, stem
    # The table's index: each experiment's runs line and opening table, linked, not a copy.
    index = (folder.parent / "README.md").read_text()
    page = (folder / "README.md").read_text()
    assert "## [synthetic-tiny](synthetic-tiny/README.md)" in index
    assert "Experiment `table2-synthetic-tiny`" in index
    results = page.split("## Results", 1)[1].lstrip("\n").splitlines()
    opening = results[: next(i for i, line in enumerate(results) if not line.startswith("|"))]
    assert opening[0] in index and opening[-1] in index
    sections = [
        line for line in page.splitlines() if line.startswith("## ") and line != "## Results"
    ]
    assert sections and not any(s in index for s in sections) and len(index) < len(page) / 2


def test_efficiency_params_by_hand(report):
    _, folder = report
    eff = pd.read_csv(folder / "efficiency.csv").set_index("variant")
    extra = eff["params_training"] - eff["params_inference"]
    # tiny preset: embed_dim 16, so each classifier is Linear(16, NUM_CLASSES) = 16·16 + 16.
    assert extra["base"] == 2 * (16 * NUM_CLASSES + NUM_CLASSES)
    assert extra["g"] > extra["base"] + 1000  # + TF-Dec and the attention head's classifier
    assert eff.loc["g", "params_inference"] > eff.loc["base", "params_inference"]  # + CFA
    assert (eff["latency_ms"] > 0).all() and (eff["gmac"] > 0).all()


def test_report_logged_to_newest_parent_run(report):
    uri, folder = report
    client, _ = connect(uri)
    tr = load_runs(client, find_experiments(client, name="table2-synthetic-tiny")[0])
    names = {Path(a.path).name for a in client.list_artifacts(tr.parent_run_id, "report")}
    assert {
        "README.md",
        "table.md",
        "table.csv",
        "table.tex",
        "delta_ci.png",
        "recon.png",
        "diagnostics.md",
        "diagnostics.png",
    } <= names


def test_rebuild_is_idempotent(report, tmp_path):
    uri, folder = report
    assert (
        build.main(
            [
                "--tracking-uri",
                uri,
                "--out",
                str(tmp_path),
                "--experiment",
                "table2-synthetic-tiny",
                "--no-log",
            ]
        )
        == 0
    )
    again = tmp_path / "table2" / "synthetic-tiny"
    assert {p.name for p in folder.iterdir()} == {p.name for p in again.iterdir()}
    # Every file the same, the efficiency table too (it reads what the runs measured); the
    # README differs only where it says whether the report was logged to the parent run.
    for name in sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "README.md"):
        assert (again / name).read_bytes() == (folder / name).read_bytes(), name


def test_the_runs_frame_names_its_metrics_params_and_tags_in_sorted_order(store):
    # MLflow orders these columns as a set iterates, which changes with each process's string
    # hashing: the evidence a report ships would differ byte by byte from one build to the next.
    from reports import load

    uri, _ = store
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    df = load._search(client, exp, "tags.kind = 'child'")
    named = [c for c in df.columns if c.startswith(("metrics.", "params.", "tags."))]
    assert len(named) > 20 and named == sorted(named)
    assert list(df.columns[: len(df.columns) - len(named)]) == [
        c for c in df.columns if c not in set(named)
    ]  # the run's own attributes (run_id, status, times …) first, as MLflow gives them
    assert df.columns[0] == "run_id"


def test_missing_metrics_and_artifacts_are_reported(store, tmp_path):
    uri, _ = store
    assert (
        build.main(
            [
                "--tracking-uri",
                uri,
                "--out",
                str(tmp_path),
                "--table",
                "1",
                "--no-log",
                "--no-efficiency",
            ]
        )
        == 0
    )
    folder = tmp_path / "table1" / "synthetic-tiny"
    text = (folder / "README.md").read_text()
    assert (
        "val/mINP: missing in base-s0" in text and "val/rank5: missing in base-s0, cfa-s0" in text
    )
    assert "no CMC in metrics.json of base-s0, cfa-s0" in text
    assert "base-s0: no figure_data.npz (trained before runs logged it)" in text
    md = (folder / "table.md").read_text()
    assert "—" in md and not (folder / "recon.png").exists()
    # A store from before the diagnostics: no diagnostics files, and the README says why.
    assert not any(folder.glob("diagnostics.*"))
    assert "## Diagnostics\n\nNo run logged the foreground diagnostics" in text


def test_real_dataset_uses_its_own_paper_numbers(tmp_path):
    folder = tmp_path / "store"
    uri = new_store(folder)
    runs = [
        FakeRun("base", 0, _val(60, 50)),
        FakeRun("ftn", 0, _val(58, 51, attn=True), grad_ratio=(0.01, 0.03)),
    ]
    log_experiment(uri, folder, runs, table=3, dataset="cuhk03_labeled", preset="cpu")
    assert (
        build.main(
            [
                "--tracking-uri",
                uri,
                "--out",
                str(tmp_path),
                "--table",
                "3",
                "--no-log",
                "--no-efficiency",
            ]
        )
        == 0
    )
    out = tmp_path / "table3" / "cuhk03_labeled-cpu"
    table = pd.read_csv(out / "table.csv").set_index("variant")
    # Paper Table 3, CUHK03 labeled: Baseline 67.6 / 66.0, FTN 80.9 / 78.5.
    assert (
        table.loc["ftn", "paper_rank1"] == 80.9 and table.loc["ftn", "paper_d_mAP"] == 78.5 - 66.0
    )
    text = (out / "README.md").read_text()
    assert "Paper numbers: CUHK03 (labeled)." in text
    assert f"**FTN**: Δ R-1 −2.0, Δ mAP +1.0; paper +13.3 / +12.5{verdicts.NO_INTERVAL}." in text
    assert "visual figures: base-s0: no figure_data.npz" in text  # its data was not there
    # No person masks on real data: only the gradient ratio (mean of 0.01 and 0.03) is left.
    diag = pd.read_csv(out / "diagnostics.csv").set_index("variant")
    assert [c for c in diag.columns if c.endswith("_mean")] == ["recon_grad_ratio_mean"]
    assert diag.loc["ftn", "recon_grad_ratio_mean"] == pytest.approx(0.02)
    assert math.isnan(diag.loc["base", "recon_grad_ratio_mean"])
    md = (out / "diagnostics.md").read_text().splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in md]
    assert cells[0] == ["Variant", "seeds", "recon / Re-ID grad"]
    assert cells[2:] == [["Baseline", "1", "—"], ["FTN", "1", "0.020"]]  # one seed: no ±
    assert (out / "diagnostics.png").exists() and "](diagnostics.png)" in text


def test_errors_are_one_line(store, tmp_path, capsys):
    uri, _ = store
    cases = [
        (["--tracking-uri", f"sqlite:///{tmp_path}/none.db"], "no tracking store at"),
        (
            ["--tracking-uri", uri, "--experiment", "table9-x-y"],
            "--experiment table9-x-y: not found",
        ),
        (["--tracking-uri", uri, "--table", "3"], "no Table 3 experiment in the store"),
        (["--tracking-uri", "nonsense"], "--tracking-uri nonsense: expected"),
    ]
    for argv, message in cases:
        assert build.main(argv + ["--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "none.db").exists()  # a report never creates a store


def test_empty_store_and_only_failed_runs(tmp_path, capsys):
    uri = new_store(tmp_path / "empty")
    with pytest.raises(FTNError, match="the store holds no ablation runs"):
        client, _ = connect(uri)
        find_experiments(client)
    log_experiment(
        uri,
        tmp_path / "empty",
        [FakeRun("base", 0, {"rank1": 1.0}, status="FAILED", artifacts=False)],
    )
    assert build.main(["--tracking-uri", uri, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "skipped table2-synthetic-tiny: no usable (FINISHED) child runs (1 FAILED run(s)" in err
    assert "error: no experiment had FINISHED child runs" in err


def test_cli_help_and_no_traceback(tmp_path, capsys):
    assert build.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--tracking-uri" in out and "--experiment" in out
    script = str(REPO / "reports" / "build.py")
    uri = new_store(tmp_path / "s")
    bad = subprocess.run(
        [sys.executable, script, "--tracking-uri", uri],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: the store holds no ablation runs")
    assert MlflowClient(uri).search_experiments()[0].name == "Default"  # store left as it was


@pytest.mark.slow
def test_end_to_end_runner_then_report(tmp_path):
    """The real runner (tiny preset) writes the store; the report reads it back."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "ablations" / "run.py"),
            "--table",
            "2",
            "--preset",
            "tiny",
            "--variants",
            "base",
            "g",
            "--seeds",
            "0",
            "1",
            "--tracking-uri",
            uri,
            "--root",
            str(tmp_path / "data"),
            "--work-dir",
            str(tmp_path / "ckpt"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert build.main(["--tracking-uri", uri, "--out", str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / "table2" / "synthetic-tiny"
    table = pd.read_csv(folder / "table.csv").set_index("variant")
    assert list(table.index) == ["base", "g"] and list(table["n"]) == [2, 2]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'child' and tags.variant = 'g'")
    assert table.loc["g", "mAP_mean"] == pytest.approx(
        sum(r.data.metrics["val/mAP"] for r in runs) / 2, abs=1e-3
    )
    assert table.loc["g", "d_mAP"] == pytest.approx(
        table.loc["g", "mAP_mean"] - table.loc["base", "mAP_mean"], abs=1e-3
    )
    text = (folder / "README.md").read_text()
    for stem in ("delta_ci", "cmc", "curves", "stage3_vs_cfa", "global_local", "recon"):
        assert f"]({stem}.png)" in text and (folder / f"{stem}.png").stat().st_size < 200_000
    assert "## Not shown" not in text, text.split("## Not shown")[-1]
    parent = client.search_runs([exp.experiment_id], "tags.kind = 'parent'")[0]
    logged = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"README.md", "table.csv", "recon.png", "efficiency.md", "claims.csv"} <= logged
    # Uncertainty from the stored per-query results: Δ's interval holds Δ, a mark per row.
    g = table.loc["g"]
    assert g["d_mAP_lo"] <= g["d_mAP"] <= g["d_mAP_hi"] and g["d_mAP_mark"] in (
        "better",
        "worse",
        "within noise",
    )
    assert g["mAP_ci_lo"] <= g["mAP_mean"] <= g["mAP_ci_hi"]
    assert "## Uncertainty" in text and "query sampling and training seed" in text
    # Where its noise comes from: shares that add up to 100, a row in the README's table.
    shares = [g[f"d_mAP_{p}_share"] for p in ("seed", "query", "interaction")]
    assert sum(shares) == pytest.approx(100, abs=0.01)
    assert g["d_mAP_half"] == pytest.approx((g["d_mAP_hi"] - g["d_mAP_lo"]) / 2, abs=1e-3)
    assert "### Where the noise comes from" in text
    from reports.cells import delta as _delta

    row = f"\n| {g['variant_label']} | {_delta(g['d_rank1'])} | {int(g['n_paired'])} | {g['d_rank1_half']:.1f} | "
    assert row in text, row
    claims = pd.read_csv(folder / "claims.csv")
    # Every claim of Table 2, judged on all of its comparisons or saying which rows are missing;
    # every run the runner wrote is its row's current configuration.
    verdicts = dict(zip(claims["claim"], claims["verdict"]))
    assert {k: verdicts[k] for k in list(verdicts)[1:5]} == {
        "every reconstruction strategy (a)–(g) beats the Baseline": "incomplete (a, b, c, d, e, f not run)",
        "(g) is the best strategy": "no evidence (a, b, c, d, e, f not run)",
        "the gradient loss helps: (f) < (g)": "no evidence (f not run)",
        "CAm guides better than PAm: (e) > (d)": "no evidence (e, d not run)",
    }
    assert "No runs were left out." in text
    kendall = claims.loc[claims["claim"].str.startswith("our ordering"), "verdict"]
    assert list(kendall) == [  # two rows give no ordering to compare
        "no evidence (2 of the paper's rows with per-query results; an ordering needs 3)"
    ]
    assert claims["claim"].str.startswith("CFA costs 1.3 M params").any()
    assert (claims.loc[claims["claim"].str.startswith("CFA costs"), "verdict"] == "holds").all()

    # A run from before per-query results: the backfill re-evaluates its saved model and gets
    # exactly the logged numbers back.
    from ablations import per_query

    (g0,) = [r for r in runs if r.data.tags["seed"] == "0"]
    stored = Path(g0.info.artifact_uri.removeprefix("file://")) / "per_query.npz"
    original = dict(np.load(stored))
    stored.unlink()
    assert per_query.main(["--tracking-uri", uri, "--table", "2"]) == 0
    again = dict(np.load(stored))
    assert set(again) == set(original) and all(
        np.array_equal(again[k], original[k]) for k in original
    )


def test_a_row_run_with_overrides_is_labelled_as_modified(tmp_path):
    uri = new_store(tmp_path)
    log_experiment(
        uri,
        tmp_path,
        [
            FakeRun("base", 0, {"rank1": 40.0, "mAP": 30.0}, artifacts=False),
            FakeRun(
                "cfa",
                0,
                {"rank1": 45.0, "mAP": 31.0},
                artifacts=False,
                sets={"loss.margin": 0.5},
                extra_tags={"overrides": "loss.margin=0.5"},
            ),
        ],
        table=1,
    )
    client, _ = connect(uri)
    tr = load_runs(client, find_experiments(client, name="table1-synthetic-tiny")[0])
    labels = tr.runs.set_index("variant")["variant_label"]
    assert labels["cfa"] == "Base. + CFA [loss.margin=0.5]" and labels["base"] == "Base."
    # Its Δ against the Baseline compares the setting too: said, and no claim is judged on it.
    from reports import gaps
    from reports.claims import _unjudged

    assert tr.row_settings == {"base": "", "cfa": "loss.margin=0.5"}
    assert gaps.setting_gaps(tr) == [
        "cfa − base: cfa trained with `loss.margin=0.5`, base with no --set of its own: their "
        "Δ compares these settings too"
    ]
    assert _unjudged(tr, {("cfa", 0): {}}, (("cfa", "base"),)) == {
        ("cfa", "base"): ["cfa and base trained with different --set: not the claim's comparison"]
    }
    # Settings are compared as values, not as the text typed.
    import dataclasses

    spelled = dataclasses.replace(
        tr, row_settings={"base": "loss.margin=5e-1", "cfa": "loss.margin=0.5"}
    )
    assert spelled.same_setting("cfa", "base") and not tr.same_setting("cfa", "base")
    out = tmp_path / "out"
    argv = ["--tracking-uri", uri, "--out", str(out), "--no-visual", "--no-efficiency"]
    assert build.main([*argv, "--no-log", "--table", "1"]) == 0
    page = (out / "table1" / "synthetic-tiny" / "README.md").read_text()
    assert "**Rows trained with different `--set`**" in page and "- cfa − base: cfa" in page


def test_the_page_says_which_code_machines_and_commands_made_the_runs(tmp_path):
    from reports.index import _provenance

    uri = new_store(tmp_path)
    log_experiment(
        uri,
        tmp_path,
        [
            FakeRun(
                "base",
                0,
                {"rank1": 40.0, "mAP": 30.0},
                artifacts=False,
                extra_tags={"machine": "CPU X (2 cores, AVX2), 1 torch thread"},
            ),
            FakeRun(
                "base",
                1,
                {"rank1": 41.0, "mAP": 30.0},
                artifacts=False,
                extra_tags={
                    "machine": "CPU X (2 cores, AVX2), 1 torch thread",
                    "git_commit": "ab" * 20 + "-dirty",
                },
            ),
            FakeRun("cfa", 0, {"rank1": 45.0, "mAP": 31.0}, artifacts=False),
        ],
        table=1,
    )
    client, _ = connect(uri)
    exp = find_experiments(client, name="table1-synthetic-tiny")[0]
    (parent,) = client.search_runs([exp.experiment_id], "tags.kind = 'parent'")
    client.set_tag(
        parent.info.run_id,
        "command",
        "ablations/run.py --table 1 --root /d --shard 1/2 "
        "--tracking-uri=sqlite:////x/m.db --work-dir /w",
    )
    text = _provenance(load_runs(client, exp))
    assert text == (
        "Code: `0000000` (2 runs), `abababa-dirty` (1 run). Machine: CPU X (2 cores, AVX2), "
        "1 torch thread (2 runs), not recorded (1 run). To train them again: "
        "`python ablations/run.py --table 1 --preset tiny --variants base --seeds 0 1`; "
        "`python ablations/run.py --table 1 --preset tiny --variants cfa --seeds 0` "
        "(where the store, data and checkpoints live is left out)."
    )


def test_settings_every_run_shares_are_stated_once_and_adopted_ones_dropped(tmp_path):
    """--set items on every run leave the labels for the page; an item the preset now sets to
    the same value itself (the cpu preset adopted random_patch=0) is no departure at all."""
    from reports.load import run_overrides

    assert run_overrides("data.random_patch=0, data.random_erasing=0.0, train.epochs=3", "cpu") == (
        "train.epochs=3",
    )
    assert run_overrides("data.random_patch=0", "tiny") == (
        "data.random_patch=0",
    )  # tiny keeps it on
    assert run_overrides("a.b=1, c.d=x, y", "no-such-preset") == ("a.b=1", "c.d=x, y")
    uri = new_store(tmp_path)
    shared = "data.synthetic_test_ids=50, train.eval_every=0"
    sets = {"data.synthetic_test_ids": 50, "train.eval_every": 0}  # the tags' values, as trained
    log_experiment(
        uri,
        tmp_path,
        [
            FakeRun(
                "base",
                0,
                {"rank1": 40.0, "mAP": 30.0},
                artifacts=False,
                sets=sets | {"data.random_patch": 0.0, "data.random_erasing": 0.0},
                extra_tags={"overrides": shared + ", data.random_patch=0, data.random_erasing=0"},
            ),
            FakeRun(
                "cfa",
                0,
                {"rank1": 45.0, "mAP": 31.0},
                artifacts=False,
                sets=sets | {"loss.margin": 0.5},
                extra_tags={"overrides": shared + ", loss.margin=0.5"},
            ),
        ],
        table=1,
        preset="cpu",
    )
    client, _ = connect(uri)
    tr = load_runs(client, find_experiments(client, name="table1-synthetic-cpu")[0])
    labels = tr.runs.set_index("variant")["variant_label"]
    assert labels["base"] == "Base." and labels["cfa"] == "Base. + CFA [loss.margin=0.5]"
    assert tr.settings == ("data.synthetic_test_ids=50", "train.eval_every=0")


def test_rank_list_picks_best_median_worst_and_frames_each_panel(tmp_path):
    from fixtures_layouts import GALLERY, QUERY, TRAIN, write_market_layout

    from ablations import ranklists
    from ftn_core.data.loading import load_dataset

    assert ranklists.choose_queries(np.array([0.5, 1.0, 0.1, 0.7, 0.3]), 1) == [
        ("best", 1),
        ("median", 0),
        ("worst", 2),
    ]
    assert [ranklists.kind(2, 0, g, c) for g, c in ((2, 1), (2, 0), (5, 1))] == [
        "match",
        "junk",
        "other",
    ]
    ds = load_dataset(
        "market1501",
        str(write_market_layout(tmp_path / "market1501", TRAIN, QUERY, GALLERY).parent),
    )
    pq = {
        "index": np.array([0, 1]),
        "ap": np.array([1.0, 0.2]),
        "top10": np.array([[2, 0, 1], [1, 2, 0]]),
    }
    out = ranklists.draw(pq, ds, tmp_path / "rl.png", "test", per_group=1)
    assert out.stat().st_size > 0
    import matplotlib.image

    height, width = matplotlib.image.imread(out).shape[:2]
    # two queries: best and median (the worst is the median again, drawn once) × (query + top 3)
    assert width / height == pytest.approx((1.1 * 4) / (2.0 * 2), rel=0.05)


def test_artifacts_of_a_remote_store_land_in_one_scratch_folder(tmp_path, monkeypatch):
    """A remote repository's download goes where it is told; told nothing, MLflow's would make a
    folder of its own per call and leave it. A local store's file is read where it lies."""
    import tempfile
    from types import SimpleNamespace

    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from reports import load

    class Remote:
        def download_artifacts(self, name, dst_path=None):
            dst = Path(dst_path or tempfile.mkdtemp())
            (dst / name).write_text('{"x": 1}')
            return str(dst / name)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(load, "_SCRATCH", [])
    monkeypatch.setattr(load, "get_artifact_repository", lambda *a, **k: Remote())
    run = SimpleNamespace(artifact_uri="https://example.invalid/artifacts")
    client = SimpleNamespace(tracking_uri="https://example.invalid")
    assert load.artifact_json(client, run, "metrics.json") == {"x": 1}
    assert load.artifact_json(client, run, "metrics.json") == {"x": 1}
    (scratch,) = (tmp_path / "tmp").iterdir()  # both downloads inside the one scratch folder
    assert scratch.name.startswith("ftn-report-") and len(list(scratch.iterdir())) == 2
    load._SCRATCH[0].cleanup()
    assert not scratch.exists()

    stored = tmp_path / "store" / "metrics.json"
    stored.parent.mkdir()
    stored.write_text("{}")
    monkeypatch.setattr(
        load, "get_artifact_repository", lambda *a, **k: LocalArtifactRepository(str(stored.parent))
    )
    assert load.artifact_path(client, run, "metrics.json") == stored  # no copy


def test_activation_maps_have_a_colour_bar_and_a_uniform_map_reference(report, store, monkeypatch):
    """Paper Figs. 4 and 5, drawn from a run's figure data: one colour bar for the min-max scaled
    overlays, each input titled with the fg share a uniform map would score (its mask's area)
    and its mask outlined, each map with the fg share the run logged."""
    from fake_store import run_config

    from ftn_core.data.splits import load_splits
    from ftn_core.figure_data import figure_arrays
    from ftn_core.model import build_model
    from reports import visual

    cfg = run_config("tiny", 2, "g", 0, store[1] / "data")
    data = figure_arrays(build_model(cfg.model, NUM_CLASSES).eval(), cfg, load_splits(cfg.data))
    drawn = []
    monkeypatch.setattr(visual, "save", lambda fig, stem, **kw: drawn.append(fig) or [])
    visual.figure_stage3_vs_cfa(data, "FTN", Path("x"))
    visual.figure_global_local({"Base": data, "FTN": data}, Path("y"))
    masks = data["ped_mask"]
    for fig, inputs in zip(drawn, (3, 4)):
        (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert bar.get_xlabel() == "activation, min–max scaled per image"
        titles = [ax.get_title() for ax in fig.axes if ax is not bar]
        uniform = [t for t in titles if "uniform" in t]
        assert len(uniform) == inputs and all(t.endswith(" %") for t in uniform)
        assert all(ax.collections for ax in fig.axes if ax is not bar)  # the mask outline
        assert sum("fg " in t for t in titles) == len(titles) - inputs
    first = next(t for t in (ax.get_title() for ax in drawn[0].axes) if "uniform" in t)
    assert first == f"input\nuniform {visual.uniform_share(masks, 0):.0f} %"
    assert visual.uniform_share(masks, 0) == pytest.approx(100 * float(masks[0].mean()))
    cfa_title = drawn[0].axes[2].get_title()  # the first pedestrian's A′ map
    assert cfa_title == f"CFA (A′)\nfg {float(data['ped_fg_attn'][0]):.0f} %"


def _hits(first: list[int]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-query results of 10 queries with rank-1 hits on the queries in ``first``, and the
    run's R-1 and mAP (their means)."""
    hit = np.isin(np.arange(10), first)
    arrays = {
        "index": np.arange(10),
        "pid": np.arange(10),
        "camid": np.zeros(10, int),
        "ap": np.where(hit, 0.8, 0.3),
        "first_rank": np.where(hit, 1, 4),
        "inp": np.full(10, 0.2),
        "top10": np.zeros((10, 10), int),
    }
    return arrays, {"rank1": 10.0 * len(first), "mAP": 100 * float(arrays["ap"].mean())}


def _hits_report(tmp_path: Path, hits: dict[tuple[str, int], list[int]]) -> Path:
    """Table 2's report folder (no figures, no cost table) built from one run per (variant,
    seed) of ``hits``, each with the per-query results of ``_hits``."""
    runs = []
    for (variant, seed), first in hits.items():
        arrays, final = _hits(first)
        runs.append(FakeRun(variant, seed, final, per_query=arrays))
    uri = new_store(tmp_path / "store")
    log_experiment(uri, tmp_path / "store", runs)
    argv = ["--tracking-uri", uri, "--out", str(tmp_path / "out"), "--no-visual"]
    assert build.main(argv + ["--no-efficiency", "--no-log"]) == 0
    return tmp_path / "out" / "table2" / "synthetic-tiny"


def test_the_report_sets_each_rows_seed_spread_beside_its_chaos_floor(tmp_path):
    # base hits queries 0-2, 0-3, 0-1 (R-1 30, 40, 20: SD 10); queries 2 and 3 are hit by 2 and
    # 1 of 3 seeds: floor = 100 · √(2 · (1/3 · 2/3) · 3/2) / 10 = 8.16, 1.2 × below the SD.
    # g hits 0-4, 0-4, 0-5 (50, 50, 60: SD 5.77); query 5 alone varies: floor = 5.77, 1.0 ×.
    hits = {
        ("base", 0): [0, 1, 2],
        ("base", 1): [0, 1, 2, 3],
        ("base", 2): [0, 1],
        ("g", 0): [0, 1, 2, 3, 4],
        ("g", 1): [0, 1, 2, 3, 4],
        ("g", 2): [0, 1, 2, 3, 4, 5],
    }
    folder = _hits_report(tmp_path, hits)
    table = pd.read_csv(folder / "table.csv").set_index("variant")
    floor = 100 * math.sqrt(2 * 2 / 9 * 1.5) / 10
    assert table.loc["base", "rank1_floor"] == pytest.approx(floor, abs=1e-3)
    assert table.loc["base", "rank1_seed_sd"] == pytest.approx(10.0)
    assert table.loc["g", "rank1_floor"] == pytest.approx(100 * math.sqrt(1 / 3) / 10, abs=1e-3)
    assert table.loc["g", "rank1_seed_sd"] == pytest.approx(10 / math.sqrt(3), abs=1e-3)
    text = (folder / "README.md").read_text()
    assert "### Seed spread against the chaos floor" in text
    assert f"| {table.loc['base', 'variant_label']} | 3 | 10.00 | 8.16 | 1.2 |" in text
    assert f"| {table.loc['g', 'variant_label']} | 3 | 5.77 | 5.77 | 1.0 |" in text
    assert "Near the floor, the runs are equally good and more test" in text


def test_an_interrupted_rebuild_leaves_the_previous_report_whole(report, tmp_path, monkeypatch):
    uri, _ = report
    argv = [
        "--tracking-uri",
        uri,
        "--out",
        str(tmp_path),
        "--experiment",
        "table2-synthetic-tiny",
        "--no-log",
        "--no-efficiency",
        "--no-visual",
    ]
    assert build.main(argv) == 0
    folder = tmp_path / "table2" / "synthetic-tiny"
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def interrupted(*args, **kwargs):  # SIGTERM half-way: some files written, not all
        raise KeyboardInterrupt

    monkeypatch.setattr(build.diagnostics_table, "write_tables", interrupted)
    assert build.main(argv) == 130
    assert {
        p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    } == before
    assert sorted(p.name for p in folder.parent.iterdir()) == [
        "README.md",
        "synthetic-tiny",
    ]  # no half folder


def test_efficiency_leaves_out_a_run_that_measured_nothing(tmp_path):
    """The efficiency table reads what each run measured of its own model (efficiency.json):
    a run without one is left out with a note naming the command that adds it, never measured
    by the report."""
    from reports.report import Report

    uri = new_store(tmp_path)
    log_experiment(
        uri,
        tmp_path,
        [FakeRun("base", 0, _val(50, 40), model=False), FakeRun("cfa", 0, _val(55, 45, attn=True))],
        table=1,
    )
    client, _ = connect(uri)
    tr = load_runs(client, find_experiments(client, name="table1-synthetic-tiny")[0])
    rep = Report(tr, tmp_path, uri)
    build.efficiency_section(client, tr, rep)
    assert list(rep.efficiency["variant"]) == ["cfa"]
    assert rep.notes == [
        "efficiency: base-s0: no efficiency.json (trained before runs measured "
        "their cost): `python ablations/per_query.py` adds it"
    ]
    assert "timed by each run when it finished" in rep.efficiency_note
    assert "a test machine" in rep.efficiency_note
    assert set(rep.attention_costs) == {"CFA", "PAM-CAM"}


def test_the_header_commands_train_exactly_the_pages_runs(tmp_path):
    """base and cfa with seeds 0-7, the other rows with 0-4: one command per seed set, each
    naming its rows; planned by the runner, the commands give exactly the page's runs."""
    import shlex
    from dataclasses import replace

    from ablations import run as run_cli
    from ablations.runner import build_plan
    from ftn_core.config import parse_sets
    from reports.index import retrain_commands

    shared = "data.synthetic_test_ids=50, train.eval_every=0"
    sets = {"data.synthetic_test_ids": 50, "train.eval_every": 0}
    eight = ("base", "cfa")
    runs = [
        FakeRun(
            v,
            s,
            {"rank1": 40.0, "mAP": 30.0},
            artifacts=False,
            sets=sets,
            extra_tags={"overrides": shared},
        )
        for v in ("base", "pamcam", "cfa_no_pa", "cfa_no_ca", "cfa_no_cmp", "cfa")
        for s in range(8 if v in eight else 5)
    ]
    uri = new_store(tmp_path)
    log_experiment(uri, tmp_path, runs, table=1)
    client, _ = connect(uri)
    tr = load_runs(client, find_experiments(client, name="table1-synthetic-tiny")[0])
    commands = retrain_commands(tr)
    tail = " --set data.synthetic_test_ids=50 --set train.eval_every=0"
    assert commands == [
        "python ablations/run.py --table 1 --preset tiny --variants base cfa --seeds 0 1 2 3 4 5 6 7"
        + tail,
        "python ablations/run.py --table 1 --preset tiny --variants pamcam cfa_no_pa cfa_no_ca "
        "cfa_no_cmp --seeds 0 1 2 3 4" + tail,
    ]
    planned = []
    for command in commands:
        args = run_cli.parse_args(shlex.split(command)[2:])
        planned += [
            (p.variant.key, p.seed, p.overrides)
            for p in build_plan(
                args.table,
                args.variants,
                args.seeds,
                args.dataset,
                "data",
                args.preset,
                parse_sets(args.sets),
            )
        ]
    assert sorted(planned) == sorted((r.variant, r.seed, shared) for r in runs)
    # The same rows with one seed set: one command, the rows not named.
    same = tr.runs[tr.runs["seed"] < 5]
    assert retrain_commands(replace(tr, runs=same)) == [
        "python ablations/run.py --table 1 --preset tiny --seeds 0 1 2 3 4" + tail
    ]


def test_a_control_is_judged_against_its_own_row_by_the_paired_interval(tmp_path):
    """oracle against (g), not against the Baseline: its own paired interval and mark decide
    the sentence, as for every other comparison."""
    hits = {
        ("base", 0): [0],
        ("base", 1): [0, 1],
        ("base", 2): [0],
        ("g", 0): [0, 1, 2],
        ("g", 1): [0, 1, 2, 3],
        ("g", 2): [0, 1],
        ("oracle", 0): [0, 1, 2, 3, 4, 5],
        ("oracle", 1): [0, 1, 2, 3, 4, 5, 6],
        ("oracle", 2): [0, 1, 2, 3, 4, 5],
    }
    folder = _hits_report(tmp_path, hits)
    table = pd.read_csv(folder / "table.csv").set_index("variant")
    # oracle − g per seed: R-1 +30, +30, +40 (mean +33.3), every seed above 0.
    assert (
        table.loc["oracle", "d_rank1_vs_ref_lo"] > 0
        and table.loc["oracle", "d_rank1_vs_ref_mark"] == "better"
    )
    text = (folder / "README.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("- **(g) with the true person mask"))
    assert "scores Δ R-1 +33.3" in line and "against (g)" in line
    assert ": the headroom a better foreground target could give (g); paired 95 % CI: R-1 [" in line
    assert "] better" in line
