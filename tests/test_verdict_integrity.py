"""A verdict only on what was run, and on runs that are exactly their study row.

The study files are refused when they could only give a wrong verdict (a row that beats itself,
claims that contradict one another, a seed or a data choice in the file, a paper table's name on
a copy), and the reports judge a claim on all of its comparisons, keep only the runs of each
row's current configuration, and never pair rows on different data. The stores are written the
way the runner writes them (its plan, its tags, its params), with per-query results chosen by
hand.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_store import new_store
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from ablations import run as run_cli
from ablations import runner
from ablations.study import STUDIES, Study, load, paper_study, parse, planned_config
from ftn_core.config import flatten, setting_hash, to_dict
from ftn_core.errors import FTNError
from reports import build

# ------------------------------------------------------------------ the study file


def _refused(text: str, *parts: str) -> str:
    with pytest.raises(FTNError) as err:
        parse(textwrap.dedent(text), "s.toml")
    line = str(err.value)
    assert "\n" not in line and line.startswith("s.toml: "), line
    for part in parts:
        assert part in line, line
    return line


TWO = 'name = "x"\n[[row]]\nkey = "a"\nset = { "loss.w_grad" = 0.5 }\n[[row]]\nkey = "b"\n'


def _claim(text: str, holds_if: str, metric: str = "") -> str:
    said = f'[[claim]]\ntext = "{text}"\nholds_if = {holds_if}\n'
    return said + (f'metric = "{metric}"\n' if metric else "")


def test_a_row_that_beats_itself_is_refused():
    _refused(TWO + _claim("a wins", '"a > a"'), "claim 'a wins'", "'a > a'", "itself")
    _refused(TWO + _claim("a wins", '["a > b", "b<b"]'), "claim 'a wins'", "'b<b'")


@pytest.mark.parametrize(
    "claims, named",
    [
        (_claim("both", '["a > b", "b > a"]'), ("claim 'both'", "'b > a'", "'a > b'")),
        (
            _claim("one", '"a > b"') + _claim("two", '"a < b"'),
            ("claim 'two'", "'a < b'", "claim 'one'"),
        ),
        # a cycle over three rows contradicts itself too, though no two of its orderings do
        (
            _claim("one", '["a > b", "b > c"]') + _claim("two", '"c > a"'),
            ("claim 'two'", "'c > a'", "'a > b'", "'b > c'"),
        ),
    ],
)
def test_contradictory_claims_are_refused(claims, named):
    three = TWO + '[[row]]\nkey = "c"\nset = { "loss.w_grad" = 0.25 }\n'
    _refused(three + claims, *named, "contradicts")


def test_orderings_on_different_metrics_do_not_contradict():
    s = parse(TWO + _claim("r1", '"a > b"') + _claim("map", '"b > a"', "mAP"), "s.toml")
    assert [(c.pairs, c.metric) for c in s.claims] == [
        ((("a", "b"),), "rank1"),
        ((("b", "a"),), "mAP"),
    ]


@pytest.mark.parametrize("value", ["my weights.pth", "w/x.pth", "a\\\\b.pth"])
def test_a_sweep_whose_row_keys_would_hold_spaces_or_slashes_is_refused(value):
    _refused(
        f'name = "x"\n[sweep]\nfield = "model.weights_path"\nvalues = ["{value}"]\n',
        "[sweep] model.weights_path",
        "row key",
    )


def test_a_sweep_of_lists_gets_keys_without_spaces():
    s = parse('name = "x"\n[sweep]\nfield = "train.milestones"\nvalues = [[2, 3], [3]]\n', "s.toml")
    assert [v.key for v in s.rows] == ["milestones=2,3", "milestones=3"]


@pytest.mark.parametrize(
    "text, where",
    [
        ('set = { "train.seed" = 3 }\n[[row]]\nkey = "a"\n', "set: train.seed"),
        ('[[row]]\nkey = "a"\nset = { "train.seed" = 3 }\n', "row 'a'"),
        ('[sweep]\nfield = "train.seed"\nvalues = [0, 1]\n', "[sweep] train.seed"),
    ],
)
def test_a_seed_in_the_study_file_is_refused(text, where):
    _refused('name = "x"\n' + text, where, "--seeds")


@pytest.mark.parametrize(
    "key, value, option",
    [("data.dataset", '"market1501"', "--dataset"), ("data.root", '"/elsewhere"', "--root")],
)
def test_where_the_data_comes_from_is_never_in_the_study_file(key, value, option):
    sets = f'set = {{ "{key}" = {value} }}\n'
    _refused(f'name = "x"\n[[row]]\nkey = "a"\n{sets}', "row 'a'", key, option)
    _refused(f'name = "x"\n{sets}[[row]]\nkey = "a"\n', f"set: {key}", option)


DATA_ROWS = """
name = "test-size"
{flag}
[[row]]
key = "small"
set = {{ "data.synthetic_test_ids" = 50 }}

[[row]]
key = "big"
set = {{ "data.synthetic_test_ids" = 100 }}
"""
FLAG = "rows_on_different_data = true"


def test_rows_on_different_data_need_the_study_to_say_so():
    _refused(DATA_ROWS.format(flag=""), "row 'big'", "data.synthetic_test_ids", FLAG)
    _refused(
        'name = "x"\n[sweep]\nfield = "data.synthetic_seed"\nvalues = [0, 1]\n',
        "data.synthetic_seed",
        FLAG,
    )
    s = parse(DATA_ROWS.format(flag=FLAG), "s.toml")
    assert s.rows_on_different_data and [v.key for v in s.rows] == ["small", "big"]
    # the same data for every row is no difference, wherever the file sets it
    rows = TWO.split("\n", 1)[1]
    same = parse('name = "x"\nset = { "data.synthetic_test_ids" = 50 }\n' + rows, "s.toml")
    assert not same.rows_on_different_data
    _refused(
        'name = "x"\nrows_on_different_data = "yes"\n[[row]]\nkey = "a"\n', "rows_on_different_data"
    )


def _dry_run(path: Path, tmp_path: Path) -> int:
    return run_cli.main(
        [
            "--study",
            str(path),
            "--preset",
            "tiny",
            "--dry-run",
            "--root",
            str(tmp_path / "data"),
            "--work-dir",
            str(tmp_path / "w"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
        ]
    )


def test_a_copy_of_a_paper_table_must_have_a_name_of_its_own(tmp_path, capsys):
    # the shipped file itself is the paper's table
    assert paper_study(1).is_paper and load(STUDIES / "table1.toml").is_paper
    copy = tmp_path / "table1.toml"
    shutil.copy(STUDIES / "table1.toml", copy)
    own_name = "give the copy a name of its own"
    with pytest.raises(FTNError, match=rf"name = 'table1' is the paper's Table 1 .*{own_name}"):
        load(copy)
    with pytest.raises(FTNError, match=own_name):  # its text alone is not the shipped file
        parse((STUDIES / "table2.toml").read_text(), str(STUDIES / "table2.toml"))
    code = _dry_run(copy, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and own_name in err
    assert not (tmp_path / "store").exists()
    s = parse(copy.read_text().replace('name = "table1"', 'name = "my-table1"'), str(copy))
    assert not s.is_paper and s.table == 1
    assert s.experiment("synthetic", "cpu") == "study-my-table1-synthetic-cpu"


def test_the_report_of_a_copy_keeping_a_paper_name_is_refused(tmp_path, capsys):
    copy = tmp_path / "t.toml"
    copy.write_text((STUDIES / "table3.toml").read_text().replace('"FTN"', '"FTN (mine)"'))
    assert (
        build.main(
            [
                "--study",
                str(copy),
                "--out",
                str(tmp_path / "out"),
                "--tracking-uri",
                f"sqlite:///{tmp_path / 'x.db'}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give the copy a name of its own" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "preset, dataset", [("tiny", "synthetic"), ("cpu", "market1501"), ("cpu", "synthetic")]
)
def test_the_planned_config_is_the_one_the_runner_trains(preset, dataset):
    study = load(STUDIES / "lambda3.toml")
    sets = {"train.epochs": "3", "data.synthetic_test_ids": "50"}
    plan = runner.build_plan(study, None, [4], [dataset], "/d", preset, sets)
    assert plan
    for p in plan:
        assert p.cfg == planned_config(p.variant, preset, dataset, "/d", sets, seed=4)


def test_setting_hash_of_a_planned_run_is_the_runners_tag():
    study = load(STUDIES / "mask_width.toml")
    (p,) = runner.build_plan(study, ["narrow"], [0], ["synthetic"], "/d", "tiny", {})
    assert runner._child_tags(p)["setting_hash"] == setting_hash(
        planned_config(study.row("narrow"), "tiny", "synthetic", "/elsewhere", {}, seed=9)
    )


def test_an_all_control_study_says_to_add_controls(tmp_path, capsys):
    path = tmp_path / "ctl.toml"
    path.write_text(
        'name = "ctl"\n[[row]]\nkey = "m"\ncontrol = true\n'
        'set = { "train.matched_updates" = true, "model.decoder" = false }\n'
    )
    code = _dry_run(path, tmp_path)
    captured = capsys.readouterr()
    assert code == 2 and "shard" not in captured.out + captured.err
    assert captured.err.count("\n") == 1
    assert "every row" in captured.err and "--controls" in captured.err


# ------------------------------------------------------------------ a store as the runner writes it


def _pq(hits: int, ap: float) -> dict[str, np.ndarray]:
    """Per-query results of 10 queries: the first ``hits`` matched at rank 1; AP ``ap`` each."""
    first = np.array([1] * hits + [3] * (10 - hits))
    return {
        "index": np.arange(10),
        "pid": np.arange(10),
        "camid": np.zeros(10, int),
        "ap": np.full(10, ap),
        "first_rank": first,
        "inp": np.full(10, ap),
        "top10": np.zeros((10, 10), int),
    }


def log_study(
    uri: str,
    folder: Path,
    study: Study,
    results: dict[tuple[str, int], int],
    digests: dict[str, str] | None = None,
    sets: dict[str, str] | None = None,
) -> None:
    """FINISHED child runs of ``study`` as ``runner`` plans and tags them (tiny preset, synthetic
    data): ``results`` = {(row, seed): rank-1 hits out of 10}, mAP = the same in percent."""
    client = MlflowClient(uri)
    keys = list(dict.fromkeys(k for k, _ in results))
    seeds = sorted({s for _, s in results})
    plan = runner.build_plan(
        study, keys, seeds, ["synthetic"], str(folder / "data"), "tiny", dict(sets or {})
    )
    name = study.experiment("synthetic", "tiny")
    exp = client.get_experiment_by_name(name)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(
            name, artifact_location=(folder / "artifacts" / name).resolve().as_uri()
        )
    )
    parent = client.create_run(
        exp_id,
        run_name=study.name,
        tags={
            "kind": "parent",
            "study": study.name,
            "study_hash": study.digest,
            "command": f"ablations/run.py --study {study.path} --preset tiny",
        },
    )
    for p in plan:
        if (p.variant.key, p.seed) not in results:
            continue
        hits = results[(p.variant.key, p.seed)]
        p.data_digest = (digests or {}).get(p.variant.key, "d" * 16)
        tags = runner._child_tags(p) | {"mlflow.parentRunId": parent.info.run_id}
        run_id = client.create_run(exp_id, run_name=p.name, tags=tags).info.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[
                Metric("val/rank1", 10.0 * hits, now, 1),
                Metric("val/mAP", 10.0 * hits, now, 1),
            ],
            params=[Param(k, str(v)) for k, v in flatten(p.cfg).items()],
        )
        client.log_dict(run_id, to_dict(p.cfg), "config.json")
        with tempfile.TemporaryDirectory() as tmp:
            np.savez_compressed(Path(tmp) / "per_query.npz", **_pq(hits, hits / 10))
            client.log_artifact(run_id, str(Path(tmp) / "per_query.npz"))
        client.set_terminated(run_id, "FINISHED")
        time.sleep(0.002)  # start times in plan order
    client.set_terminated(parent.info.run_id, "FINISHED")


def _build(uri: str, path: Path, out: Path, capsys) -> tuple[pd.DataFrame, str, str]:
    """claims.csv, the README and the console of a report built from ``uri``."""
    capsys.readouterr()
    assert (
        build.main(
            [
                "--study",
                str(path),
                "--tracking-uri",
                uri,
                "--out",
                str(out),
                "--no-visual",
                "--no-efficiency",
                "--no-log",
            ]
        )
        == 0
    )
    folder = out / f"study-{load(path).name}" / "synthetic-tiny"
    claims = pd.read_csv(folder / "claims.csv")
    return claims, (folder / "README.md").read_text(), capsys.readouterr().out


PROBE = """
name = "probe"
reference = "z"

[[row]]
key = "a"
set = { "loss.w_grad" = 0.5 }

[[row]]
key = "y"
set = { "loss.w_grad" = 0.25 }

[[row]]
key = "z"

[[claim]]
text = "a beats z and y"
holds_if = ["a > z", "a > y"]

[[claim]]
text = "y beats z"
holds_if = "y > z"

[[claim]]
text = "a beats z"
holds_if = "a > z"
"""


def test_a_claim_is_judged_on_all_of_its_comparisons_or_says_what_is_missing(tmp_path, capsys):
    path = tmp_path / "probe.toml"
    path.write_text(PROBE)
    uri = new_store(tmp_path / "store")
    hits = {"a": (10, 9, 10), "z": (0, 1, 0)}
    log_study(
        uri,
        tmp_path / "store",
        load(path),
        {(k, s): h for k, row in hits.items() for s, h in enumerate(row)},
    )
    claims, readme, _ = _build(uri, path, tmp_path / "out", capsys)
    verdicts = dict(zip(claims["claim"], claims["verdict"]))
    assert verdicts == {
        "a beats z and y": "incomplete (y not run)",
        "y beats z": "no evidence (y not run)",
        "a beats z": "holds",
    }
    evidence = dict(zip(claims["claim"], claims["evidence"]))["a beats z and y"]
    assert "a−z +93.3" in evidence and "a−y: y not run" in evidence
    for text, verdict in verdicts.items():
        assert f"| {text} " in readme and f" {verdict} |" in readme


CONTROL_REFERENCE = """
name = "ctl-ref"
reference = "ctl"

[[row]]
key = "ctl"
control = true
set = { "train.matched_updates" = true, "model.decoder" = false }

[[row]]
key = "a"
set = { "loss.w_grad" = 0.5 }

[[row]]
key = "b"
set = { "loss.w_grad" = 0.25 }

[[claim]]
text = "a beats the control"
holds_if = "a > ctl"
"""


def test_a_claim_on_a_control_that_was_not_run_reads_no_evidence(tmp_path, capsys):
    path = tmp_path / "ctl.toml"
    path.write_text(CONTROL_REFERENCE)
    uri = new_store(tmp_path / "store")
    log_study(
        uri, tmp_path / "store", load(path), {("a", 0): 6, ("a", 1): 7, ("b", 0): 5, ("b", 1): 4}
    )
    claims, readme, console = _build(uri, path, tmp_path / "out", capsys)
    (verdict,) = claims["verdict"]
    assert verdict.startswith("no evidence (ctl not run") and "--controls" in verdict
    # ctl-s0 and ctl-s1 are what every Δ lacks: two runs, named once each
    assert "2 run(s) missing from a paired Δ" in console
    assert "ctl has no FINISHED run at seeds 0 1: they are left out of a − ctl, b − ctl" in console
    assert "| a beats the control " in readme


MASK = """
name = "mask-width"
reference = "paper"

[[row]]
key = "narrow"
set = {{ {narrow} }}

[[row]]
key = "paper"

[[claim]]
text = "a narrower Gm helps"
holds_if = "narrow > paper"
"""


@pytest.mark.parametrize(
    "now",
    [
        '"model.gauss_sy" = 0.3, "model.gauss_sx" = 0.18',  # a value
        '"model.gauss_sx" = 0.18',
    ],
)  # a key no row sets any more
def test_runs_of_a_row_whose_settings_changed_in_the_file_are_left_out(tmp_path, capsys, now):
    path = tmp_path / "mask.toml"
    path.write_text(MASK.format(narrow='"model.gauss_sy" = 0.25, "model.gauss_sx" = 0.18'))
    uri = new_store(tmp_path / "store")
    log_study(
        uri,
        tmp_path / "store",
        load(path),
        {("narrow", 0): 9, ("narrow", 1): 8, ("paper", 0): 2, ("paper", 1): 3},
    )
    path.write_text(MASK.format(narrow=now))
    claims, readme, console = _build(uri, path, tmp_path / "out", capsys)
    assert "No runs were left out" not in readme
    line = next(x for x in console.splitlines() if "narrow-s" in x)
    assert "left out: 2 run(s)" in line and "row narrow" in line and "model.gauss_sy" in line
    assert f"`python ablations/run.py --study {path}`" in line and "(narrow-s1, narrow-s0)" in line
    assert "paper-s" not in console  # the row the file did not change keeps its runs
    assert claims["verdict"].tolist() == [
        "no evidence (narrow not run as the study file has it now)"
    ]


def test_each_row_whose_settings_changed_is_named_with_its_own_change(tmp_path, capsys):
    path = tmp_path / "mask.toml"
    path.write_text(MASK.format(narrow='"model.gauss_sy" = 0.25'))
    uri = new_store(tmp_path / "store")
    log_study(
        uri, tmp_path / "store", load(path), {("narrow", 0): 9, ("paper", 0): 2, ("paper", 1): 3}
    )
    changed = MASK.format(narrow='"model.gauss_sy" = 0.2')
    path.write_text(
        changed.replace('key = "paper"\n', 'key = "paper"\nset = { "loss.w_l1" = 0.5 }\n')
    )
    capsys.readouterr()
    out = tmp_path / "out"
    assert build.main(["--study", str(path), "--tracking-uri", uri, "--out", str(out)]) == 2
    err = capsys.readouterr().err  # every run left out: nothing to report, each reason said
    assert err.startswith("skipped study-mask-width-synthetic-tiny: no usable (FINISHED) child")
    said = "trained with other settings than the study file gives it now"
    assert f"1 run(s) of row narrow {said} (model.gauss_sy 0.25, now 0.2): rerun" in err
    assert f"2 run(s) of row paper {said} (loss.w_l1 1.0, now 0.5): rerun" in err
    assert "(narrow-s0)" in err and "(paper-s1, paper-s0)" in err


def test_a_row_whose_settings_did_not_change_keeps_its_runs_whatever_the_set(tmp_path, capsys):
    """The runs of a row trained with ``--set`` are its current configuration plus that set."""
    path = tmp_path / "mask.toml"
    path.write_text(MASK.format(narrow='"model.gauss_sy" = 0.25'))
    uri = new_store(tmp_path / "store")
    log_study(
        uri,
        tmp_path / "store",
        load(path),
        {(k, s): h + s % 2 for k, h in (("narrow", 8), ("paper", 2)) for s in (0, 1, 2)},
        sets={"train.epochs": "3", "data.synthetic_test_ids": "7"},
    )
    claims, readme, console = _build(uri, path, tmp_path / "out", capsys)
    assert "No runs were left out" in readme and "left out" not in console
    assert claims["verdict"].tolist() == ["holds"]


def test_rows_on_different_data_are_never_paired(tmp_path, capsys):
    path = tmp_path / "size.toml"
    path.write_text(
        DATA_ROWS.format(flag=FLAG) + '[[row]]\nkey = "mid"\n'
        'set = { "data.synthetic_test_ids" = 50, "loss.w_grad" = 0.5 }\n'
        + _claim("big beats small", '"big > small"')
        + _claim("mid beats small", '"mid > small"')
    )
    uri = new_store(tmp_path / "store")
    hits = {"small": 2, "big": 9, "mid": 8}
    log_study(
        uri,
        tmp_path / "store",
        load(path),
        {(k, s): h + s % 2 for k, h in hits.items() for s in (0, 1, 2)},
        digests={"small": "s" * 16, "big": "b" * 16, "mid": "s" * 16},
    )
    claims, readme, console = _build(uri, path, tmp_path / "out", capsys)
    verdicts = dict(zip(claims["claim"], claims["verdict"]))
    assert verdicts["big beats small"] == (
        "no evidence (big and small are on different data: never paired)"
    )
    assert verdicts["mid beats small"] == "holds"  # the same data: paired
    # no run was set aside as stale (the header's "To train them again" is the reproduction line)
    assert "to include them" not in readme + console and "left out" not in console
    assert (
        "big and small are on different data (data digests bbbbbbbbbbbbbbbb, ssssssssssssssss)"
        in console
    )
    table = pd.read_csv(tmp_path / "out" / "study-test-size" / "synthetic-tiny" / "table.csv")
    table = table.set_index("variant")
    assert np.isnan(table.loc["big", "d_rank1"]) and np.isnan(table.loc["big", "d_rank1_lo"])
    assert table.loc["mid", "d_rank1"] == pytest.approx(60.0) and table.loc["big", "n"] == 3


def test_the_report_of_a_studys_experiment_by_name_points_to_the_study_file(tmp_path, capsys):
    path = tmp_path / "mask.toml"
    path.write_text(MASK.format(narrow='"model.gauss_sy" = 0.25'))
    uri = new_store(tmp_path / "store")
    log_study(uri, tmp_path / "store", load(path), {("narrow", 0): 9, ("paper", 0): 2})
    capsys.readouterr()
    assert (
        build.main(
            [
                "--experiment",
                "study-mask-width-synthetic-tiny",
                "--tracking-uri",
                uri,
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Table 0" not in err and not (tmp_path / "out").exists()
    assert "study mask-width" in err and "--study FILE" in err


def test_every_claim_has_its_line_even_without_per_query_results(tmp_path, capsys):
    """Runs from before per-query results: no claim can be judged, and each one says why."""
    from fake_store import FakeRun, log_experiment

    uri = new_store(tmp_path / "store")
    values = {"rank1": 50.0, "mAP": 40.0, "fg_focus_norm_attn": 20.0}
    log_experiment(
        uri,
        tmp_path / "store",
        [FakeRun(v, s, values, model=False) for v in ("base", "g") for s in (0, 1)],
        table=2,
    )
    capsys.readouterr()
    assert (
        build.main(
            [
                "--table",
                "2",
                "--tracking-uri",
                uri,
                "--out",
                str(tmp_path / "out"),
                "--no-visual",
                "--no-efficiency",
                "--no-log",
            ]
        )
        == 0
    )
    folder = tmp_path / "out" / "table2" / "synthetic-tiny"
    claims = pd.read_csv(folder / "claims.csv")
    verdicts = dict(zip(claims["claim"], claims["verdict"]))
    no_results = "no per-query results in these runs: `python ablations/per_query.py` adds them"
    *orderings, focus = paper_study(2).claims
    assert [verdicts[c.text] for c in orderings] == [
        "no evidence (built with --no-efficiency)",
        f"no evidence (a, b, c, d, e, f not run; {no_results})",
        "no evidence (a, b, c, d, e, f not run)",
        "no evidence (f not run)",
        "no evidence (e, d not run)",
    ]
    assert verdicts[focus.text] == "holds"  # (g) ran: A′'s focus 20 at both seeds, judged on them
    assert (
        "normalised focus of A′ for (g): 20.0"
        in claims.set_index("claim").loc[focus.text, "evidence"]
    )
    assert verdicts["our ordering of the Table 2 rows follows the paper's"] == (
        "no evidence (0 of the paper's rows with per-query results; an ordering needs 3)"
    )
    readme = (folder / "README.md").read_text()
    assert all(f"| {c.text} " in readme for c in paper_study(2).claims)
