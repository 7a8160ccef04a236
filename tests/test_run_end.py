"""A run is FINISHED only when its code finished it: an end status that cannot be written at
once is written again, a run still active at exit is KILLED (MLflow's own exit hook would call
it FINISHED), and a FINISHED run without its final evaluation is resumed, never reported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
from fake_store import FakeRun, log_experiment, new_store
from mlflow import MlflowClient

from ablations import store, tracking
from ablations.store import connect
from reports.load import find_experiments, load_runs

REPO = Path(__file__).resolve().parents[1]


def test_a_run_left_active_at_exit_is_killed_not_finished(tmp_path):
    uri = new_store(tmp_path)
    code = textwrap.dedent(f"""
        import mlflow
        from ablations import tracking
        mlflow.set_tracking_uri({uri!r})
        tracking.end_unfinished_runs_killed()
        run = mlflow.start_run(run_name="left-active")
        mlflow.log_metric("train/loss_ce", 1.0)
        print(run.info.run_id)
    """)  # exits with the run still active, as after an error while it was being ended
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    run = MlflowClient(uri).get_run(out.stdout.strip().splitlines()[-1])
    assert run.info.status == "KILLED"
    # Without the replacement, MLflow's hook ends it FINISHED: the behaviour guarded against.
    plain = code.replace("tracking.end_unfinished_runs_killed()", "")
    out = subprocess.run(
        [sys.executable, "-c", plain], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert MlflowClient(uri).get_run(out.stdout.strip().splitlines()[-1]).info.status == "FINISHED"


def test_an_end_status_is_written_again_while_the_store_is_locked(tmp_path, monkeypatch):
    uri = new_store(tmp_path)
    mlflow.set_tracking_uri(uri)
    run = mlflow.start_run(run_name="locked")
    real, calls = MlflowClient.set_terminated, []

    def locked_twice(self, run_id, status=None, end_time=None):
        calls.append(status)
        if len(calls) <= 2:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return real(self, run_id, status, end_time)

    monkeypatch.setattr(MlflowClient, "set_terminated", locked_twice)
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    tracking.end_run("KILLED")
    assert calls == ["KILLED"] * 3 and mlflow.active_run() is None
    assert MlflowClient(uri).get_run(run.info.run_id).info.status == "KILLED"


def test_a_finished_run_without_its_final_evaluation_is_resumed_and_never_reported(tmp_path):
    uri = new_store(tmp_path)
    seen = {"data_digest": "87ce43bf007c2077"}
    log_experiment(
        uri,
        tmp_path,
        [
            FakeRun("base", 0, {"rank1": 50.0, "mAP": 40.0}, extra_tags=seen),
            FakeRun("g", 0, {}, artifacts=False, extra_tags=seen),
        ],
    )
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], store.CHILD_RUNS)}
    assert runs["g-s0"].info.status == "FINISHED" and not store.completed(runs["g-s0"])
    assert store.completed(runs["base-s0"])
    copyable = store.finished_by_config(client)  # what another experiment may copy
    assert [r.info.run_name for r in copyable.values()] == ["base-s0"]
    rclient, _ = connect(uri)
    tr = load_runs(rclient, find_experiments(rclient, name="table2-synthetic-tiny")[0])
    assert list(tr.runs["variant"]) == ["base"]
    assert any(
        "1 FINISHED run(s) without their final evaluation" in r and "(g-s0)" in r
        for r in tr.left_out
    )


@pytest.mark.parametrize(
    "status, final, expected",
    [("FINISHED", True, "done"), ("FINISHED", False, "resume"), ("KILLED", True, "resume")],
)
def test_the_plan_resumes_a_run_that_never_reached_its_end(status, final, expected):
    from types import SimpleNamespace

    from ablations import runner

    metrics = {"val/rank1": 50.0} if final else {}
    run = SimpleNamespace(
        info=SimpleNamespace(run_id="r1", status=status), data=SimpleNamespace(metrics=metrics)
    )
    p = SimpleNamespace(
        variant=SimpleNamespace(key="g"),
        seed=0,
        hash="h",
        data_digest="d",
        init_digest="",
        legacy_hash="",
        run_id=None,
        status="new",
    )
    assert runner._own_run(p, {("g", 0, "h", "d", ""): run})
    assert p.status == expected and p.run_id == "r1"
