"""--until-halfwidth: the first seeds of every row, then the next seed where the Δ interval is
widest (the reference paired), up to a half-width or a number of seeds; workers share it."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from ablations import runner, scheduling
from ablations import store as mlstore
from ablations.intervals import delta_interval, paired_matrix
from ablations.seed_rule import Group, Row, SeedRule, next_pick, required, stop_reason, width
from ftn_core.config import flatten, to_dict

REPO = Path(__file__).resolve().parents[1]
Q = 20  # queries


def hits(first: int, extra: tuple[int, ...] = ()) -> dict[int, float]:
    """R-1 per query (0 or 100): queries 0 … first−1 matched at rank 1, and ``extra``."""
    return {q: 100.0 if q < first or q in extra else 0.0 for q in range(Q)}


REF = hits(10)


def wide(seed: int) -> dict[int, float]:
    """A row whose Δ swings with the seed: −25, +25, 0 points, again and again."""
    return hits((5, 15, 10)[seed % 3])


def narrow(seed: int) -> dict[int, float]:
    """A row one or two queries better than the reference: Δ +5, +10, +5, +10 … points."""
    return hits(10, tuple(range(10, 11 + seed % 2)))


def group(
    rows: dict[str, dict[int, dict[int, float]]], reference: str = "base", **pending
) -> Group:
    out = Group("exp", reference, {k: Row(k, dict(v)) for k, v in rows.items()})
    for field, seeds in pending.items():  # e.g. busy={"a": {3}}
        for key, values in seeds.items():
            getattr(out.rows[key], field).update(values)
    return out


def three(fn, seeds=range(3)) -> dict[int, dict[int, float]]:
    return {s: fn(s) for s in seeds}


def test_the_rules_tag_records_first_seeds_other_than_the_default():
    assert SeedRule(1.0, 24).tag == "until-halfwidth 1, max 24"  # as runs have always had it
    rule = SeedRule(0.5, 10, (5, 6, 7))
    assert rule.tag == "until-halfwidth 0.5, max 10, first 5 6 7"
    assert SeedRule.parse(rule.tag) == rule
    assert SeedRule.parse("until-halfwidth 1, max 24") == SeedRule(1.0, 24, (0, 1, 2))
    assert SeedRule.parse("until-halfwidth 1, max 24, first") is None


def test_first_seeds_come_first_in_seed_order():
    rule = SeedRule(1.0, 24)
    g = group({"base": {}, "a": {}, "b": {}})
    assert [(p.row, p.seed) for p in required(g, rule)] == [
        (r, s) for s in (0, 1, 2) for r in ("base", "a", "b")
    ]
    assert next_pick([g], rule)[1:3] == ("base", 0)


def test_then_the_widest_row_gets_the_next_seed_and_the_reference_its_pair():
    rule = SeedRule(1.0, 24)
    g = group({"base": three(lambda s: REF), "a": three(narrow), "b": three(wide)})
    half_a, half_b = (width(g.rows[k], g.rows["base"])[0] for k in ("a", "b"))
    # By hand: b's per-seed Δ are −25, +25, 0 (SD 25): t · 25 / √3 with t above 2 at 3 seeds;
    # a's are +5, +10, +5 (SD 2.9).
    assert half_b > 2 * 25 / math.sqrt(3) > 20 > half_a > 1.0
    assert half_b == pytest.approx(
        (lambda d: (d.hi - d.lo) / 2)(
            delta_interval(paired_matrix(three(wide), three(lambda s: REF)))
        )
    )
    pick = next_pick([g], rule)
    assert (pick.row, pick.seed) == ("b", 3) and "widest" in pick.why
    g.rows["b"].finished[3] = wide(3)  # b-s3 done: the reference's s3 is due before any other pick
    pick = next_pick([g], rule)
    assert (pick.row, pick.seed) == ("base", 3) and "paired with b-s3" in pick.why


def test_it_stops_at_the_target_or_at_max_seeds():
    four = range(4)
    g = group(
        {"base": three(lambda s: REF, four), "a": three(narrow, four), "b": three(wide, four)}
    )
    assert next_pick([g], SeedRule(1.0, 4)) is None  # both at 4 seeds
    assert (next_pick([g], SeedRule(1.0, 5)) or ())[1:3] == ("b", 4)
    half_a = width(g.rows["a"], g.rows["base"])[0]
    at_target = SeedRule(half_a + 0.01, 24)  # a is narrow enough, b is not: only b gets seeds
    assert next_pick([g], at_target)[1:3] == ("b", 4)
    assert next_pick([g], SeedRule(1000.0, 24)) is None  # every row within ±1000
    assert stop_reason(half_a, 4, at_target).startswith("half-width reached (±")
    assert stop_reason(50.0, 4, SeedRule(1.0, 4)) == "max seeds (4; ±50.00)"
    assert "run the command again" in stop_reason(50.0, 3, SeedRule(1.0, 4))


def test_the_sign_of_the_delta_plays_no_part():
    """Mirrored Δ (the row better by d, or worse by d, at every seed and query) give the same
    widths and the same next run: the rule never looks at the sign or the p-value."""
    up = {s: {q: 100.0 - v for q, v in wide(s).items()} for s in range(3)}  # 100 − x: Δ mirrored
    ref_up = {s: {q: 100.0 - v for q, v in REF.items()} for s in range(3)}
    a_up = {s: {q: 100.0 - v for q, v in narrow(s).items()} for s in range(3)}
    mirrored = group({"base": ref_up, "a": a_up, "b": up})
    plain = group({"base": three(lambda s: REF), "a": three(narrow), "b": three(wide)})
    d_plain = delta_interval(paired_matrix(three(narrow), three(lambda s: REF)))
    d_mirror = delta_interval(paired_matrix(mirrored.rows["a"].results(), ref_up))
    assert d_mirror.delta == pytest.approx(-d_plain.delta) != 0  # the sign flips …
    for key in ("a", "b"):  # … the widths do not
        assert width(mirrored.rows[key], mirrored.rows["base"])[0] == pytest.approx(
            width(plain.rows[key], plain.rows["base"])[0]
        )
    rule = SeedRule(1.0, 24)
    assert next_pick([mirrored], rule)[1:3] == next_pick([plain], rule)[1:3] == ("b", 3)


def test_a_run_being_trained_elsewhere_counts_as_given():
    """b-s3 held by another worker: its pair is due, b's next seed is 4 (increasing order), and
    b's half-width is the one its noise projects with four seeds."""
    g = group({"base": three(lambda s: REF), "a": three(narrow), "b": three(wide)}, busy={"b": {3}})
    rule = SeedRule(1.0, 24)
    assert [(p.row, p.seed) for p in required(g, rule)] == [("base", 3)]
    g.rows["base"].busy.add(3)  # held too
    measured = delta_interval(paired_matrix(three(wide), three(lambda s: REF)))
    assert width(g.rows["b"], g.rows["base"])[0] == pytest.approx(measured.parts.half_width(4))
    assert next_pick([g], rule)[1:3] == ("b", 4)
    g.rows["b"].busy.add(4)  # b has 5 seeds given (its cap); its s4's pair first, then a gets s3
    assert next_pick([g], SeedRule(1.0, 5))[1:3] == ("base", 4)
    g.rows["base"].busy.add(4)
    assert next_pick([g], SeedRule(1.0, 5))[1:3] == ("a", 3)


def test_the_rule_is_tagged_and_read_back():
    rule = SeedRule(1.0, 24, (0, 1, 2))
    assert rule.tag == "until-halfwidth 1, max 24"
    assert SeedRule.parse(rule.tag) == rule and SeedRule.parse("seeds 0 1") is None
    assert SeedRule(0.5, 6, (0, 1)).seeds() == [0, 1, 2, 3, 4, 5]
    assert SeedRule(0.5, 4, (0, 5)).seeds() == [0, 5, 6, 7]


# ----------------------------------------------------------------- the loop on a store, no training


def _pq(values: dict[int, float]) -> dict[str, np.ndarray]:
    q = np.arange(Q)
    first = np.array([1 if values[i] else 3 for i in q])
    return {
        "index": q,
        "pid": q,
        "camid": np.zeros(Q, int),
        "ap": first == 1,
        "first_rank": first,
        "inp": np.ones(Q),
        "top10": np.zeros((Q, 10), int),
    }


RESULTS = {"base": lambda s: REF, "cfa": narrow, "pamcam": wide}


@pytest.fixture
def fake_training(monkeypatch):
    """``_train_one`` logs the run as the runner tags it, with per-query results from
    ``RESULTS``, FINISHED, instead of training; returns the names in the order trained."""
    trained: list[str] = []

    def train_one(p, client, work_dir, parent_ids, splits, rank, world_size, keep, counter):
        exp_id = mlstore.get_or_create_experiment(client, p.experiment)
        tags = runner._child_tags(p) | {"mlflow.parentRunId": parent_ids.get(p.experiment, "")}
        run_id = client.create_run(exp_id, run_name=p.name, tags=tags).info.run_id
        values = RESULTS[p.variant.key](p.seed)
        r1, now = float(np.mean(list(values.values()))), int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(f"val/{m}", r1, now, 1) for m in ("rank1", "mAP")],
            params=[Param(k, str(v)) for k, v in flatten(p.cfg).items()],
        )
        client.log_dict(run_id, to_dict(p.cfg), "config.json")
        with tempfile.TemporaryDirectory() as tmp:
            np.savez_compressed(Path(tmp) / "per_query.npz", **_pq(values))
            client.log_artifact(run_id, str(Path(tmp) / "per_query.npz"))
        client.set_terminated(run_id, "FINISHED")
        p.status, p.run_id = "done", run_id
        trained.append(p.name)
        return False

    monkeypatch.setattr(runner, "_train_one", train_one)
    return trained


def _plan(rule: SeedRule, root: Path):
    plan = runner.build_plan(
        1, ["base", "pamcam", "cfa"], rule.seeds(), ["synthetic"], str(root), "tiny", {}
    )
    runner.read_data(plan, generate=False)  # the data digest follows from the settings
    for p in plan:
        p.seed_rule = rule.tag
    return plan


def test_the_loop_runs_three_seeds_then_the_widest_row_to_max_seeds(
    store, tmp_path, fake_training, capsys
):
    rule = SeedRule(0.01, 4)
    client = mlstore.open_store(store["uri"])
    plan = _plan(rule, tmp_path)
    parents = runner.start_parents(plan, client, ["ablations/run.py", "--table", "1"])
    failed = scheduling.run_until_halfwidth(
        plan, rule, client, Path(store["work"]), parents, {}, leases=tmp_path / "leases"
    )
    assert failed == []
    first = [f"{r}-s{s}" for s in (0, 1, 2) for r in ("base", "pamcam", "cfa")]
    # pamcam swings ±25 with the seed: widest; then cfa (base-s3 exists by then); then both at 4.
    assert fake_training == first + ["pamcam-s3", "base-s3", "cfa-s3"]
    out = capsys.readouterr().out
    assert "pamcam: seeds 0 1 2 3: max seeds (4; ±" in out
    assert "cfa: seeds 0 1 2 3: max seeds" in out
    runs = client.search_runs([client.get_experiment_by_name(plan[0].experiment).experiment_id])
    assert {r.data.tags["seed_rule"] for r in runs} == {"until-halfwidth 0.01, max 4"}
    # The report names the rule, each row's seeds and why it stopped.
    from reports import build

    assert (
        build.main(
            [
                "--table",
                "1",
                "--tracking-uri",
                store["uri"],
                "--out",
                str(tmp_path / "out"),
                "--no-visual",
                "--no-efficiency",
                "--no-log",
            ]
        )
        == 0
    )
    readme = (tmp_path / "out" / "table1" / "synthetic-tiny" / "README.md").read_text()
    assert "Seeds chosen by `--until-halfwidth 0.01 --max-seeds 4`" in readme
    assert "never its sign or p-value" in readme
    assert "- Base. (the reference): seeds 0 1 2 3\n" in readme
    assert "- Base. + PAM-CAM: seeds 0 1 2 3, max seeds (4; ±" in readme
    # Run again: nothing left to give.
    fake_training.clear()
    assert (
        scheduling.run_until_halfwidth(
            plan, rule, client, Path(store["work"]), {}, {}, leases=tmp_path / "leases"
        )
        == []
        and fake_training == []
    )
    # Seeds given by hand afterwards (`--seeds 4 5`, no rule) are named, never the rule's.
    hand = runner.build_plan(1, ["base", "cfa"], [4, 5], ["synthetic"], str(tmp_path), "tiny", {})
    runner.read_data(hand, generate=False)
    assert runner.execute(hand, client, Path(store["work"]), parents, {}) == []
    out = tmp_path / "again"
    argv = ["--table", "1", "--tracking-uri", store["uri"], "--out", str(out)]
    assert build.main([*argv, "--no-visual", "--no-efficiency", "--no-log"]) == 0
    readme = (out / "table1" / "synthetic-tiny" / "README.md").read_text()
    assert "Some seeds were not chosen by this rule (given with `--seeds`" in readme
    assert "- Base. (the reference): seeds 0 1 2 3 4 5 (4 5 not chosen by the rule)\n" in readme
    assert "- Base. + CFA: seeds 0 1 2 3 4 5 (4 5 not chosen by the rule), half-width ±" in readme
    assert "- Base. + PAM-CAM: seeds 0 1 2 3, max seeds (4; ±" in readme


def test_workers_share_the_rule_through_leases(store, tmp_path, fake_training, capsys):
    """Another worker holds pamcam-s3 (its lease): this one pairs it (base-s3), gives pamcam
    its seed 4 next and never trains pamcam-s3 itself."""
    rule = SeedRule(0.01, 5)
    client = mlstore.open_store(store["uri"])
    plan = _plan(rule, tmp_path)
    held = next(p for p in plan if p.name == "pamcam-s3")
    with mlstore.run_lease(tmp_path / "leases", runner.lease_key(held)) as holder:
        assert holder is None
        scheduling.run_until_halfwidth(
            plan, rule, client, Path(store["work"]), {}, {}, leases=tmp_path / "leases"
        )
    assert "pamcam-s3" not in fake_training
    assert fake_training.index("base-s3") < fake_training.index("pamcam-s4")
    assert {"pamcam-s4", "base-s4", "cfa-s3", "cfa-s4"} <= set(fake_training)
    assert "being trained by pid" in capsys.readouterr().out


# ------------------------------------------------------------------ end to end on the tiny preset


@pytest.mark.slow
def test_until_halfwidth_end_to_end_and_the_report_says_why_each_row_stopped(
    store, data_root, tmp_path
):
    from reports import build

    cmd = [
        sys.executable,
        str(REPO / "ablations" / "run.py"),
        "--table",
        "1",
        "--preset",
        "tiny",
        "--variants",
        "cfa",
        "--seeds",
        "0",
        "1",
        "--until-halfwidth",
        "0.01",
        "--max-seeds",
        "3",
        "--root",
        str(data_root),
        "--tracking-uri",
        store["uri"],
        "--work-dir",
        store["work"],
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("table1-synthetic-tiny")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'child'")
    names = sorted(r.info.run_name for r in runs)
    # base added (every Δ is against it) and paired with cfa's third seed
    assert names == ["base-s0", "base-s1", "base-s2", "cfa-s0", "cfa-s1", "cfa-s2"]
    assert {r.data.tags["seed_rule"] for r in runs} == {"until-halfwidth 0.01, max 3, first 0 1"}
    rule = "[until-halfwidth 0.01, max 3, first 0 1] table1-synthetic-tiny"
    assert f"{rule} cfa-s2: its Δ R-1 half-width" in done.stdout
    out = tmp_path / "out"
    assert (
        build.main(
            [
                "--table",
                "1",
                "--tracking-uri",
                store["uri"],
                "--out",
                str(out),
                "--no-visual",
                "--no-efficiency",
                "--no-log",
            ]
        )
        == 0
    )
    readme = (out / "table1" / "synthetic-tiny" / "README.md").read_text()
    assert "`--until-halfwidth 0.01 --max-seeds 3 --seeds 0 1`" in readme
    assert "Base. + CFA: seeds 0 1 2, max seeds (3; ±" in readme
