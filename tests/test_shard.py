"""Scale-out of the ablation grid: disjoint shards (--shard, SLURM arrays) sharing one store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablations import run as run_cli
from ablations import scheduling
from ablations.runner import build_plan
from ftn_core.errors import FTNError

REPO = Path(__file__).resolve().parents[1]
SLURM = (
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
)


@pytest.fixture
def no_slurm(monkeypatch):
    for name in SLURM:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "env,shard",
    [
        ({}, (0, 1)),  # not under SLURM: everything
        (
            {
                "SLURM_ARRAY_TASK_ID": "2",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "0",
            },
            (2, 4),
        ),
        # --array=1-4: ids start at the minimum, so task 4 is the last of four shards.
        (
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            (3, 4),
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "1",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            (0, 4),
        ),
        # --array=0-6:2 → ids 0, 2, 4, 6 (count 4, step 2): id 6 is shard 3.
        (
            {
                "SLURM_ARRAY_TASK_ID": "6",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_STEP": "2",
            },
            (3, 4),
        ),
        # A job that is not an array (no count): everything.
        ({"SLURM_ARRAY_TASK_ID": "3"}, (0, 1)),
    ],
)
def test_parse_shard_reads_slurm_arrays(no_slurm, env, shard):
    for key, value in env.items():
        no_slurm.setenv(key, value)
    assert run_cli.parse_shard(None) == shard


def test_explicit_shard_wins_over_slurm(no_slurm):
    no_slurm.setenv("SLURM_ARRAY_TASK_ID", "0")
    no_slurm.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert run_cli.parse_shard("1/3") == (1, 3)


@pytest.mark.parametrize(
    "text,env,message",
    [
        ("1-2", {}, "--shard 1-2: expected K/N, e.g. --shard 0/4"),
        ("2/2", {}, "--shard 2/2: need 0 <= K < N"),
        ("0/0", {}, "--shard 0/0: need 0 <= K < N"),
        # --array=1,3,5,7 has no step: task 7 would be shard 6 of 4; say so, and what to do.
        (
            None,
            {
                "SLURM_ARRAY_TASK_ID": "7",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            "SLURM array task 7 (shard 6/4; use --array=0-3 or pass --shard): need 0 <= K < N",
        ),
    ],
)
def test_bad_shards_are_one_line_errors(no_slurm, text, env, message):
    for key, value in env.items():
        no_slurm.setenv(key, value)
    with pytest.raises(FTNError) as err:
        run_cli.parse_shard(text)
    assert str(err.value) == message


@pytest.mark.parametrize("n", [1, 2, 3, 5, 20])
def test_shards_partition_the_runs_still_to_do(n):
    plan = build_plan(2, None, [0, 1], ["synthetic"], "data", "tiny", {})
    for p in plan[:3]:
        p.status = "done"  # FINISHED already: no shard gets them
    seconds = scheduling.expected_seconds(plan, None)
    shards = [[p.name for p in scheduling.shard_runs(plan, (k, n), seconds)] for k in range(n)]
    todo = [p.name for p in plan[3:]]
    assert sorted(sum(shards, [])) == sorted(todo) if n > 1 else shards == [[p.name for p in plan]]
    if n > 1:
        assert all(s == [x for x in todo if x in s] for s in shards)  # each in plan order


def test_shards_are_packed_by_expected_time_longest_first():
    """LPT with known costs: 5 4 3 3 2 2 1 s into two shards of 10 s each (round robin would
    give 11 and 9); the same costs give the same shards; a FINISHED run is in none."""
    plan = build_plan(1, ["base"], list(range(7)), ["synthetic"], "data", "tiny", {})
    seconds = [5.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0]
    assert scheduling.shard_bins(plan, 2, seconds) == [[0, 3, 5], [1, 2, 4, 6]]
    assert scheduling.shard_bins(plan, 2, list(seconds)) == [[0, 3, 5], [1, 2, 4, 6]]  # again
    assert [p.seed for p in scheduling.shard_runs(plan, (1, 2), seconds)] == [1, 2, 4, 6]
    plan[0].status = "done"
    assert scheduling.shard_bins(plan, 2, seconds) == [[1, 4, 5], [2, 3, 6]]  # 4+2+2 = 8, 3+3+1 = 7
    line = scheduling.describe_shard(plan, (1, 2), seconds)
    assert "shard 1/2: 3 of the 6 run(s) still to do" in line


def test_expected_seconds_per_row_from_the_store_else_by_step_cost(tmp_path):
    """A row's FINISHED runs give its seconds per epoch (median); a row without any is scaled
    from its step cost relative to the rows with some; a copy costs nothing."""
    from types import SimpleNamespace

    plan = build_plan(1, ["base", "pamcam", "cfa"], [0], ["synthetic"], str(tmp_path), "tiny", {})
    for p in plan:
        p.data_digest = "d1"
    epochs = plan[0].cfg.train.epochs

    def run(variant, per_epoch, seed):
        tags = {
            "kind": "child",
            "variant": variant,
            "seed": str(seed),
            "config_hash": variant,
            "data_digest": "d1",
            "preset": "tiny",
        }
        info = SimpleNamespace(
            status="FINISHED",
            start_time=0,
            run_id=f"{variant}{seed}",
            end_time=int(per_epoch * epochs * 1000),
        )
        data = SimpleNamespace(tags=tags, params={"train.epochs": str(epochs)}, metrics={})
        return SimpleNamespace(info=info, data=data)

    runs = [run("base", 90, 0), run("base", 110, 1), run("cfa", 120, 0)]
    exp = SimpleNamespace(experiment_id="1", name=plan[0].experiment, lifecycle_stage="active")
    client = SimpleNamespace(
        get_experiment_by_name=lambda name: exp, search_runs=lambda ids, **k: runs
    )
    seconds = scheduling.expected_seconds(plan, client)
    # base: median 100 s per epoch; cfa: 120 (step cost 1.2: 100 per Baseline epoch); pamcam
    # (attention, no decoder: step cost 1.2) has no run: 1.2 × 100.
    assert seconds == pytest.approx([100 * epochs, 120 * epochs, 120 * epochs])
    assert scheduling.relative_cost(plan[1]) == pytest.approx(1.2 * epochs)
    plan[1].status = "reuse"
    assert scheduling.expected_seconds(plan, client)[1] == 0.0
    # No run in the store: the preset's nominal run time (a Table 2 run, of mean step cost 1.6);
    # a GPU preset has none: Baseline epochs.
    from ftn_core.presets import RUN_SECONDS

    seconds, unit = scheduling.expected_cost(plan, None)
    assert unit == "s" and seconds[0] == pytest.approx(RUN_SECONDS["tiny"] / 1.6)
    gpu = build_plan(1, ["base"], [0], ["synthetic"], str(tmp_path), "gpu", {})
    assert scheduling.expected_cost(gpu, None) == ([gpu[0].cfg.train.epochs], "Baseline epochs")


def test_a_dataset_logged_by_two_shards_at_once_is_linked_on_retry(store, data_root, monkeypatch):
    """Two shards logging the same new dataset at once: one insert loses a UNIQUE race in
    MLflow's datasets table (seen with SQLite and with a tracking server); it links on retry."""
    import mlflow

    from ablations import runner, tracking
    from ablations import store as mlstore

    client = mlstore.open_store(store["uri"])
    (p,) = build_plan(2, ["base"], [0], ["synthetic"], str(data_root), "tiny", {})
    splits = runner.load_todo([p], runner.read_data([p]))["synthetic"]
    calls = []

    def flaky(s):
        calls.append(s.name)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException(
                "UNIQUE constraint failed: datasets.experiment_id"
            )
        real(s)

    real = tracking.log_dataset
    monkeypatch.setattr(runner.tracking, "log_dataset", flaky)
    run_id = runner._start_child(p, client, parent_id="", splits=splits)
    mlflow.end_run()
    assert calls == ["synthetic_tiny", "synthetic_tiny"]
    assert [d.dataset.name for d in client.get_run(run_id).inputs.dataset_inputs] == [
        "synthetic_tiny"
    ]


def _children(uri: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    return client, client.search_runs([exp.experiment_id], filter_string="tags.kind = 'child'")


@pytest.mark.slow
def test_two_shards_one_store_a_killed_workers_run_is_finished_once(
    store, data_root, no_slurm, capsys
):
    # No store yet: the two workers start together on a new one (the README's shard example).
    cmd = [
        sys.executable,
        str(REPO / "ablations" / "run.py"),
        "--table",
        "2",
        "--preset",
        "tiny",
        "--variants",
        "base",
        "a",
        "b",
        "g",
        "--seeds",
        "0",
        "--set",
        "train.epochs=6",
        "--root",
        str(data_root),
        "--tracking-uri",
        store["uri"],
        "--work-dir",
        store["work"],
    ]
    # One thread per worker: two 2-thread workers on two cores thrash (measured: ~5x slower).
    env = {**{k: v for k, v in os.environ.items() if k not in SLURM}, "OMP_NUM_THREADS": "1"}
    # Packed by step cost (base 1, a 1.5, b and g 1.7 Baseline epochs per epoch): shard 0/2 gets
    # b and a (3.2), shard 1/2 base and g (2.7), each in plan order.
    procs = [
        subprocess.Popen(
            [*cmd, "--shard", f"{k}/2"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(2)
    ]
    ckpts = Path(store["work"]) / "table2-synthetic-tiny"
    t0 = time.time()
    while not list(ckpts.glob("g-s0-*.pt")):  # shard 1 finished 'base' and is inside 'g'
        assert procs[1].poll() is None, procs[1].communicate()[0][-3000:]
        assert time.time() - t0 < 300, "g never started"
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)  # no handler runs: the MLflow run stays RUNNING
    procs[1].wait(timeout=60)
    out0 = procs[0].communicate(timeout=600)[0]
    assert procs[0].returncode == 0, out0[-3000:]
    assert all(f"table2-synthetic-tiny {n}-s0 (training" in out0 for n in ("a", "b"))
    # Shard 0, its own runs done, takes g: left RUNNING by the killed shard, it resumes it (or,
    # had shard 1 still held it, leaves it to shard 1's rerun). base is never trained twice.
    assert "shard 0/2: its own runs are done" in out0 and "base-s0: finished meanwhile" in out0
    _, runs = _children(store["uri"])
    g_id = next(r.info.run_id for r in runs if r.info.run_name == "g-s0")
    # The killed shard's rerun and a third run, in this process (the two workers above are the
    # separate processes this test is about).
    capsys.readouterr()
    assert run_cli.main([*cmd[2:], "--shard", "1/2"]) == 0
    rerun = capsys.readouterr().out
    resumed = [out for out in (out0, rerun) if "g-s0 (resuming" in out]
    assert len(resumed) == 1  # g resumed once, by one of them
    client, runs = _children(store["uri"])
    names = sorted(r.info.run_name for r in runs)
    assert names == ["a-s0", "b-s0", "base-s0", "g-s0"]  # each (variant, seed) exactly once
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(len(r.inputs.dataset_inputs) == 1 for r in runs)  # each run links the dataset once
    g = next(r for r in runs if r.info.run_name == "g-s0")
    assert g.info.run_id == g_id  # resumed in the same MLflow run
    assert {m.step for m in client.get_metric_history(g_id, "val/mAP")} == set(range(1, 7))
    # And a third run of either shard trains nothing.
    assert run_cli.main([*cmd[2:], "--shard", "0/2"]) == 0
    assert "already FINISHED" in capsys.readouterr().out
