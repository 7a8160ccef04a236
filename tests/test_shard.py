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
from ablations.runner import build_plan
from ftn_core.errors import FTNError

REPO = Path(__file__).resolve().parents[1]
SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
         "SLURM_ARRAY_TASK_STEP")


@pytest.fixture
def no_slurm(monkeypatch):
    for name in SLURM:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("env,shard", [
    ({}, (0, 1)),  # not under SLURM: everything
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, (2, 4)),
    # --array=1-4: ids start at the minimum, so task 4 is the last of four shards.
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, (3, 4)),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, (0, 4)),
    # --array=0-6:2 → ids 0, 2, 4, 6 (count 4, step 2): id 6 is shard 3.
    ({"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_STEP": "2"}, (3, 4)),
    # A job that is not an array (no count): everything.
    ({"SLURM_ARRAY_TASK_ID": "3"}, (0, 1)),
])
def test_parse_shard_reads_slurm_arrays(no_slurm, env, shard):
    for key, value in env.items():
        no_slurm.setenv(key, value)
    assert run_cli.parse_shard(None) == shard


def test_explicit_shard_wins_over_slurm(no_slurm):
    no_slurm.setenv("SLURM_ARRAY_TASK_ID", "0")
    no_slurm.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert run_cli.parse_shard("1/3") == (1, 3)


@pytest.mark.parametrize("text,env,message", [
    ("1-2", {}, "--shard 1-2: expected K/N, e.g. --shard 0/4"),
    ("2/2", {}, "--shard 2/2: need 0 <= K < N"),
    ("0/0", {}, "--shard 0/0: need 0 <= K < N"),
    # --array=1,3,5,7 has no step: task 7 would be shard 6 of 4; say so, and what to do.
    (None, {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"},
     "SLURM array task 7 (shard 6/4; use --array=0-3 or pass --shard): need 0 <= K < N"),
])
def test_bad_shards_are_one_line_errors(no_slurm, text, env, message):
    for key, value in env.items():
        no_slurm.setenv(key, value)
    with pytest.raises(FTNError) as err:
        run_cli.parse_shard(text)
    assert str(err.value) == message


@pytest.mark.parametrize("n", [1, 2, 3, 5, 20])
def test_shards_partition_the_plan(n):
    args = (2, None, [0, 1], ["synthetic"], "data", "tiny", {})
    full = [p.name for p in build_plan(*args)]
    shards = [[p.name for p in build_plan(*args, shard=(k, n))] for k in range(n)]
    assert sorted(sum(shards, [])) == sorted(full)  # every run in exactly one shard
    assert all(s == full[k::n] for k, s in enumerate(shards))  # round robin in plan order
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced


def test_a_dataset_logged_by_two_shards_at_once_is_linked_on_retry(store, data_root, monkeypatch):
    """Two shards logging the same new dataset at once: one insert loses a UNIQUE race in
    MLflow's datasets table (seen with SQLite and with a tracking server); it links on retry."""
    import mlflow

    from ablations import runner, tracking

    client = tracking.open_store(store["uri"])
    (p,) = build_plan(2, ["base"], [0], ["synthetic"], str(data_root), "tiny", {})
    splits = runner.load_todo([p], runner.read_data([p]))["synthetic"]
    calls = []

    def flaky(s):
        calls.append(s.name)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException("UNIQUE constraint failed: datasets.experiment_id")
        real(s)

    real = tracking.log_dataset
    monkeypatch.setattr(runner.tracking, "log_dataset", flaky)
    run_id = runner._start_child(p, client, parent_id="", splits=splits)
    mlflow.end_run()
    assert calls == ["synthetic_tiny", "synthetic_tiny"]
    assert [d.dataset.name for d in client.get_run(run_id).inputs.dataset_inputs] == ["synthetic_tiny"]


def _children(uri: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    return client, client.search_runs([exp.experiment_id], filter_string="tags.kind = 'child'")


@pytest.mark.slow
def test_two_shards_one_store_a_killed_worker_is_finished_by_its_rerun(store, data_root, no_slurm):
    # No store yet: the two workers start together on a new one (the README's shard example).
    cmd = [sys.executable, str(REPO / "ablations" / "run.py"), "--table", "2", "--preset", "tiny",
           "--variants", "base", "a", "b", "g", "--seeds", "0", "--set", "train.epochs=6",
           "--root", str(data_root), "--tracking-uri", store["uri"], "--work-dir", store["work"]]
    # One thread per worker: two 2-thread workers on two cores thrash (measured: ~5x slower).
    env = {**{k: v for k, v in os.environ.items() if k not in SLURM}, "OMP_NUM_THREADS": "1"}
    # Plan order base, a, b, g: shard 0/2 runs base and b, shard 1/2 runs a and g.
    procs = [subprocess.Popen([*cmd, "--shard", f"{k}/2"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in range(2)]
    ckpts = Path(store["work"]) / "table2-synthetic-tiny"
    t0 = time.time()
    while not list(ckpts.glob("g-s0-*.pt")):  # shard 1 finished 'a' and is inside 'g'
        assert procs[1].poll() is None, procs[1].communicate()[0][-3000:]
        assert time.time() - t0 < 300, "g never started"
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)  # no handler runs: the MLflow run stays RUNNING
    procs[1].wait(timeout=60)
    out0 = procs[0].communicate(timeout=600)[0]
    assert procs[0].returncode == 0, out0[-3000:]
    _, runs = _children(store["uri"])
    status = {r.info.run_name: r.info.status for r in runs}
    assert status == {"base-s0": "FINISHED", "b-s0": "FINISHED", "a-s0": "FINISHED", "g-s0": "RUNNING"}
    g_id = next(r.info.run_id for r in runs if r.info.run_name == "g-s0")

    rerun = subprocess.run([*cmd, "--shard", "1/2"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "[1/1] table2-synthetic-tiny g-s0 (resuming" in rerun.stdout  # 'a' is not trained again
    client, runs = _children(store["uri"])
    names = sorted(r.info.run_name for r in runs)
    assert names == ["a-s0", "b-s0", "base-s0", "g-s0"]  # each (variant, seed) exactly once
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(len(r.inputs.dataset_inputs) == 1 for r in runs)  # each run links the dataset once
    g = next(r for r in runs if r.info.run_name == "g-s0")
    assert g.info.run_id == g_id  # resumed in the same MLflow run
    assert {m.step for m in client.get_metric_history(g_id, "val/mAP")} == set(range(1, 7))
    # And a third run of either shard trains nothing.
    again = subprocess.run([*cmd, "--shard", "0/2"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and "already FINISHED" in again.stdout
