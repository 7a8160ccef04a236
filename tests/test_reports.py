"""Reports built from an MLflow store laid out as the runner writes it (tests/fake_store.py).

The numbers are chosen so that means, stds, Δs and Spearman's ρ can be checked by hand.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from fake_store import NUM_CLASSES, FakeRun, log_experiment, new_store
from ftn_core.errors import FTNError
from reports import build, tables
from reports.load import connect, find_experiments, load_runs

REPO = Path(__file__).resolve().parents[1]


def _val(rank1: float, mAP: float, attn: bool = False) -> dict[str, float]:
    out = {"rank1": rank1, "rank5": rank1 + 10, "rank10": rank1 + 15, "mAP": mAP,
           "mINP": mAP - 10, "fg_focus": 40.0, "fg_focus_stage3": 30.0,
           "fg_focus_global": 40.0, "fg_focus_local": 45.0}
    if attn:
        out["fg_focus_attn"] = 55.0
    return out


# (variant, seed) → (R-1, mAP). Baseline 55 ± 7.07 / 42; a +1 / +4; c −6 / −3 (worse); g +16 / +19.
RESULTS = {("base", 0): (50, 40), ("base", 1): (60, 44), ("a", 0): (55, 45), ("a", 1): (57, 47),
           ("c", 0): (48, 38), ("c", 1): (50, 40), ("g", 0): (70, 60), ("g", 1): (72, 62)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    uri = new_store(folder)
    runs = [FakeRun("base", 1, _val(10, 10))]  # older duplicate of base-s1: must be left out
    runs += [FakeRun(v, s, _val(r1, m, attn=v in "cg")) for (v, s), (r1, m) in RESULTS.items()]
    runs.append(FakeRun("g", 0, _val(99, 99, True), status="FAILED"))
    runs.append(FakeRun("b", 0, _val(99, 99, True), status="RUNNING"))
    log_experiment(uri, folder, runs, table=2)
    # Table 1: missing metrics and artifacts, one seed each.
    t1 = [FakeRun("base", 0, {"rank1": 40.0, "mAP": 30.0}, artifacts=False),
          FakeRun("cfa", 0, {"rank1": 45.0, "mAP": 31.0, "mINP": 20.0}, artifacts=False)]
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
    assert tr.order == ["base", "a", "c", "g"]  # the paper's row order
    base1 = tr.runs[(tr.runs["variant"] == "base") & (tr.runs["seed"] == 1)]
    assert base1["metrics.val/rank1"].item() == 60  # the newer of the two FINISHED base-s1
    assert tr.left_out == ["1 FAILED run(s) (g-s0)", "1 RUNNING run(s) (b-s0)",
                           "1 older duplicate(s) of a newer FINISHED run (base-s1)"]
    assert tr.parent_run_id is not None


def test_summary_means_std_and_deltas_by_hand(store):
    client, _ = connect(store[0])
    tr = load_runs(client, find_experiments(client, name="table2-synthetic-tiny")[0])
    s = tables.summarize(tr).set_index("variant")
    assert s.loc["base", "rank1_mean"] == 55 and s.loc["base", "mAP_mean"] == 42
    assert s.loc["base", "rank1_std"] == pytest.approx(math.sqrt(50))  # ddof = 1
    assert s.loc["base", "rank5_mean"] == 65 and s.loc["g", "mINP_mean"] == 51
    assert list(s["d_rank1"]) == [0, 1, -6, 16]
    assert list(s["d_mAP"]) == [0, 4, -3, 19]
    # The paper's Market-1501 rows (synthetic data): Table 2 base 94.5/85.8, a 95.7/87.1.
    assert s.loc["a", "paper_rank1"] == 95.7 and s.loc["g", "paper_mAP"] == 89.1
    assert s.loc["a", "paper_d_rank1"] == pytest.approx(1.2)
    assert s.loc["c", "paper_d_mAP"] == pytest.approx(2.4)
    # Spearman by hand: R-1 orders agree (a, c, g → 2, 1, 3 both) → 1; mAP ours (2, 1, 3) vs
    # paper (1, 2, 3): d = (1, −1, 0), ρ = 1 − 6·2 / (3·8) = 0.5.
    assert tables.rank_agreement(s.reset_index(), "rank1") == (pytest.approx(1.0), 3)
    assert tables.rank_agreement(s.reset_index(), "mAP") == (pytest.approx(0.5), 3)
    two = s.reset_index()[s.reset_index()["variant"].isin(["base", "a", "g"])]
    rho, n = tables.rank_agreement(two, "mAP")
    assert math.isnan(rho) and n == 2


def test_table_files(report):
    _, folder = report
    csv = pd.read_csv(folder / "table.csv").set_index("variant")
    assert csv.loc["c", "d_rank1"] == -6 and csv.loc["g", "n"] == 2
    md = (folder / "table.md").read_text()
    assert "| Base." in md and "55.0 ± 7.1" in md and "+16.0" in md and "−6.0" in md
    tex = (folder / "table.tex").read_text()
    assert "\\begin{tabular}" in tex and "$55.0 \\pm 7.1$" in tex and "$-6.0$" in tex


def test_readme_is_honest_and_complete(report):
    _, folder = report
    text = (folder / "README.md").read_text()
    assert "**(c) Gm** does **not** beat our Baseline" in text
    # c: ΔR-1 −6 vs √(7.07² + 1.41²) = 7.2; ΔmAP −3 vs √(2.83² + 1.41²) = 3.2.
    assert "within the seed spread (R-1 ±7.2, mAP ±3.2)." in text
    assert "**(g) Gm + PAm + CAm (FTN)** beats our Baseline on R-1 and mAP" in text
    assert "1 FAILED run(s) (g-s0)" in text and "older duplicate" in text
    assert "Market-1501 numbers are shown instead" in text
    assert "Spearman ρ = +1.00 over 3 variants" in text
    for stem in ("bars", "delta", "cmc", "curves", "fg_focus", "stage3_vs_cfa", "global_local",
                 "recon"):
        assert f"]({stem}.png)" in text, stem
        png, pdf = folder / f"{stem}.png", folder / f"{stem}.pdf"
        assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
        assert png.stat().st_size < 200_000, stem
    index = (folder.parent / "README.md").read_text()
    assert "](synthetic-tiny/bars.png)" in index and "## Table 2 — synthetic" in index


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
    assert {"README.md", "table.md", "table.csv", "table.tex", "bars.png", "recon.png"} <= names


def test_rebuild_is_idempotent(report, tmp_path):
    uri, folder = report
    assert build.main(["--tracking-uri", uri, "--out", str(tmp_path), "--experiment",
                       "table2-synthetic-tiny", "--no-log", "--no-efficiency"]) == 0
    again = tmp_path / "table2" / "synthetic-tiny"
    assert {p.name for p in folder.iterdir()} - {p.name for p in again.iterdir()} == {
        "efficiency.csv", "efficiency.md"}
    for name in ("table.csv", "table.md", "table.tex", "bars.png", "delta.pdf", "recon.png",
                 "stage3_vs_cfa.png", "curves.pdf"):
        assert (again / name).read_bytes() == (folder / name).read_bytes(), name


def test_missing_metrics_and_artifacts_are_reported(store, tmp_path):
    uri, _ = store
    assert build.main(["--tracking-uri", uri, "--out", str(tmp_path), "--table", "1",
                       "--no-log", "--no-efficiency"]) == 0
    folder = tmp_path / "table1" / "synthetic-tiny"
    text = (folder / "README.md").read_text()
    assert "val/mINP: missing in base-s0" in text and "val/rank5: missing in base-s0, cfa-s0" in text
    assert "no CMC in metrics.json of base-s0, cfa-s0" in text
    assert "base-s0: no config.json artifact" in text
    md = (folder / "table.md").read_text()
    assert "—" in md and not (folder / "recon.png").exists()


def test_real_dataset_uses_its_own_paper_numbers(tmp_path):
    folder = tmp_path / "store"
    uri = new_store(folder)
    runs = [FakeRun("base", 0, _val(60, 50)), FakeRun("ftn", 0, _val(58, 51, attn=True))]
    log_experiment(uri, folder, runs, table=3, dataset="cuhk03_labeled", preset="cpu")
    assert build.main(["--tracking-uri", uri, "--out", str(tmp_path), "--table", "3",
                       "--no-log", "--no-efficiency"]) == 0
    out = tmp_path / "table3" / "cuhk03_labeled-cpu"
    table = pd.read_csv(out / "table.csv").set_index("variant")
    # Paper Table 3, CUHK03 labeled: Baseline 67.6 / 66.0, FTN 80.9 / 78.5.
    assert table.loc["ftn", "paper_rank1"] == 80.9 and table.loc["ftn", "paper_d_mAP"] == 78.5 - 66.0
    text = (out / "README.md").read_text()
    assert "Paper numbers: CUHK03 (labeled)." in text
    assert "**FTN** beats our Baseline on mAP but **not** on R-1" in text
    assert "one seed only, so the change may be noise" in text
    assert "visual figures skipped: dataset cuhk03_labeled not readable" in text


def test_errors_are_one_line(store, tmp_path, capsys):
    uri, _ = store
    cases = [
        (["--tracking-uri", f"sqlite:///{tmp_path}/none.db"], "no tracking store at"),
        (["--tracking-uri", uri, "--experiment", "table9-x-y"], "--experiment table9-x-y: not found"),
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
    log_experiment(uri, tmp_path / "empty",
                   [FakeRun("base", 0, {"rank1": 1.0}, status="FAILED", artifacts=False)])
    assert build.main(["--tracking-uri", uri, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "skipped table2-synthetic-tiny: no usable (FINISHED) child runs (1 FAILED run(s)" in err
    assert "error: no experiment had FINISHED child runs" in err


def test_cli_help_and_no_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        build.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--tracking-uri" in out and "--experiment" in out
    script = str(REPO / "reports" / "build.py")
    uri = new_store(tmp_path / "s")
    bad = subprocess.run([sys.executable, script, "--tracking-uri", uri], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: the store holds no ablation runs")
    assert MlflowClient(uri).search_experiments()[0].name == "Default"  # store left as it was


@pytest.mark.slow
def test_end_to_end_runner_then_report(tmp_path):
    """The real runner (tiny preset) writes the store; the report reads it back."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = subprocess.run(
        [sys.executable, str(REPO / "ablations" / "run.py"), "--table", "2", "--preset", "tiny",
         "--variants", "base", "g", "--seeds", "0", "1", "--tracking-uri", uri,
         "--root", str(tmp_path / "data"), "--work-dir", str(tmp_path / "ckpt")],
        capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert build.main(["--tracking-uri", uri, "--out", str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / "table2" / "synthetic-tiny"
    table = pd.read_csv(folder / "table.csv").set_index("variant")
    assert list(table.index) == ["base", "g"] and list(table["n"]) == [2, 2]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'child' and tags.variant = 'g'")
    assert table.loc["g", "mAP_mean"] == pytest.approx(
        sum(r.data.metrics["val/mAP"] for r in runs) / 2, abs=1e-3)
    assert table.loc["g", "d_mAP"] == pytest.approx(
        table.loc["g", "mAP_mean"] - table.loc["base", "mAP_mean"], abs=1e-3)
    text = (folder / "README.md").read_text()
    for stem in ("bars", "cmc", "curves", "fg_focus", "stage3_vs_cfa", "global_local", "recon"):
        assert f"]({stem}.png)" in text and (folder / f"{stem}.png").stat().st_size < 200_000
    assert "## Not shown" not in text, text.split("## Not shown")[-1]
    parent = client.search_runs([exp.experiment_id], "tags.kind = 'parent'")[0]
    logged = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"README.md", "table.csv", "recon.png", "efficiency.md"} <= logged
