"""A run is exactly its configuration on exactly its data, and one process owns it: the seed
comes only from --seeds, the data's folder is no part of its identity, damaged data is refused,
a deleted experiment stays deleted, a run being trained is never resumed by another process,
and checkpoints belong to their store's run."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ablations import run as run_cli
from ablations import runner
from ablations import store as mlstore
from ftn_core.config import config_hash, legacy_config_hash, override
from ftn_core.errors import FTNError
from ftn_core.presets import preset_config


def _args(store, data_root, *extra):
    return [
        "--table",
        "2",
        "--preset",
        "tiny",
        "--tracking-uri",
        store["uri"],
        "--work-dir",
        store["work"],
        "--root",
        str(data_root),
        "--variants",
        "base",
        *extra,
    ]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _no_store(store) -> bool:
    return not Path(store["uri"].removeprefix("sqlite:///")).exists()


# ------------------------------------------------------------------ the seed comes from --seeds


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--set", "train.seed=5", "--seeds", "3"],
            "--set train.seed=5: a run's seed comes only from --seeds",
        ),
        (["--seeds", "99999999999999999999"], "seeds must be integers from 0 to 4294967295"),
    ],
)
def test_seed_only_from_seeds_and_in_range(store, data_root, capsys, monkeypatch, extra, message):
    monkeypatch.setattr("ablations.runner.execute", lambda *a, **k: pytest.fail("trained"))
    assert run_cli.main(_args(store, data_root, *extra)) == 2
    assert message in _one_line_error(capsys)
    assert _no_store(store)  # refused before anything was created


def test_params_file_cannot_set_the_seed(store, data_root, tmp_path, capsys):
    params = tmp_path / "best.json"
    params.write_text('{"train.seed": 7}')
    assert run_cli.main(_args(store, data_root, "--params-file", str(params))) == 2
    assert "train.seed=7: a run's seed comes only from --seeds" in _one_line_error(capsys)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, "SLURM_ARRAY_TASK_ID=x"),
        (
            {
                "SLURM_ARRAY_TASK_ID": "0",
                "SLURM_ARRAY_TASK_COUNT": "2",
                "SLURM_ARRAY_TASK_STEP": "0",
            },
            "SLURM_ARRAY_TASK_STEP=0",
        ),
    ],
)
def test_unusable_slurm_array_is_one_line(store, data_root, capsys, monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert run_cli.main(_args(store, data_root)) == 2
    err = _one_line_error(capsys)
    assert message in err and "--shard" in err


def test_data_beyond_what_the_data_has_is_refused_before_the_store(store, data_root, capsys):
    assert run_cli.main(_args(store, data_root, "--set", "data.num_ids=1000")) == 2
    assert "lower data.num_ids" in _one_line_error(capsys)
    assert _no_store(store)


# ------------------------------------------------------------------ identity without locations


def test_identity_leaves_out_where_the_data_lives_and_the_sign_of_zero(data_root):
    cfg = preset_config("tiny", {"data.root": str(data_root)})
    spellings = [
        str(data_root) + "/",
        os.path.relpath(data_root),
        str(data_root / ".." / data_root.name),
    ]
    assert {config_hash(override(cfg, {"data.root": r})) for r in spellings} == {config_hash(cfg)}
    assert config_hash(override(cfg, {"loss.w_grad": "-0"})) == config_hash(
        override(cfg, {"loss.w_grad": "0"})
    )
    assert config_hash(override(cfg, {"loss.w_grad": "0.5"})) != config_hash(cfg)
    # Runs tagged by older code (the folder in the hash) are still found through the legacy hash.
    assert legacy_config_hash(cfg) != legacy_config_hash(override(cfg, {"data.root": "/elsewhere"}))
    assert legacy_config_hash(cfg) != config_hash(cfg)


@pytest.mark.slow
def test_a_finished_run_is_found_whatever_the_folder_is_called(
    store, data_root, tmp_path, capsys, monkeypatch
):
    one_epoch = ("--set", "train.epochs=1")
    assert run_cli.main(_args(store, data_root, *one_epoch)) == 0
    capsys.readouterr()
    monkeypatch.setattr("ablations.runner.execute", lambda *a, **k: pytest.fail("trained again"))
    copy = tmp_path / "copy"
    shutil.copytree(data_root, copy)
    monkeypatch.chdir(tmp_path)
    for root in (str(data_root) + "/", "copy", "./copy/"):
        assert run_cli.main(_args(store, root, *one_epoch)) == 0
        assert "already FINISHED" in capsys.readouterr().out


def test_old_runs_are_found_by_their_legacy_hash(store, data_root):
    plan = runner.build_plan(2, ["base"], [0], ["synthetic"], str(data_root), "tiny", {})
    runner.read_data(plan, generate=False)
    p = plan[0]
    client = mlstore.open_store(store["uri"])
    exp_id = mlstore.get_or_create_experiment(client, p.experiment)
    run = client.create_run(
        exp_id,
        run_name=p.name,
        tags={
            "kind": "child",
            "variant": "base",
            "seed": "0",
            "config_hash": p.legacy_hash,
            "data_digest": p.data_digest,
        },
    )
    client.log_metric(run.info.run_id, "val/rank1", 50.0)  # a finished run's final evaluation
    client.set_terminated(run.info.run_id, "FINISHED")
    runner.mark_existing(plan, client)
    assert (p.status, p.run_id) == ("done", run.info.run_id)


# ------------------------------------------------------------------ damaged data


def test_damaged_synthetic_data_is_refused(tmp_path):
    from ftn_core.data.synthetic import generate, load_synthetic

    folder = Path(generate(str(tmp_path), "tiny", 0))
    splits = load_synthetic(str(tmp_path), "tiny", 0)  # intact: read as generated
    assert len(splits.query) > 5
    for path in sorted((folder / "query").iterdir())[:5]:
        path.unlink()
    with pytest.raises(FTNError, match="changed after it was generated"):
        load_synthetic(str(tmp_path), "tiny", 0)


def test_old_copies_get_their_files_digest_at_first_read(tmp_path):
    import json

    from ftn_core.data.synthetic import MARKER, generate, load_synthetic

    folder = Path(generate(str(tmp_path), "tiny", 0))
    marker = folder / MARKER
    info = json.loads(marker.read_text())
    recorded = info.pop("files")
    marker.write_text(json.dumps(info))  # as older code wrote it
    load_synthetic(str(tmp_path), "tiny", 0)
    assert json.loads(marker.read_text())["files"] == recorded
    mask = next((folder / "masks" / "query").iterdir())
    mask.write_bytes(
        mask.read_bytes() + b"\0"
    )  # a mask edited: the oracle and diagnostics read them
    with pytest.raises(FTNError, match="changed after it was generated"):
        load_synthetic(str(tmp_path), "tiny", 0)


# ------------------------------------------------------------------ a deleted experiment stays deleted


def test_a_deleted_experiment_is_not_restored(store, data_root, capsys, monkeypatch):
    monkeypatch.setattr("ablations.runner.execute", lambda *a, **k: pytest.fail("trained"))
    client = mlstore.open_store(store["uri"])
    exp_id = mlstore.get_or_create_experiment(client, "table2-synthetic-tiny")
    client.delete_experiment(exp_id)
    assert run_cli.main(_args(store, data_root)) == 2
    err = _one_line_error(capsys)
    assert "was deleted" in err and f"mlflow experiments restore --experiment-id {exp_id}" in err
    assert MlflowClient(store["uri"]).get_experiment(exp_id).lifecycle_stage == "deleted"


# ------------------------------------------------------------------ one owner per run


def test_a_run_held_by_a_live_process_is_left_to_it(store, data_root, capsys, monkeypatch):
    monkeypatch.setattr(
        "ablations.runner._train_one", lambda *a, **k: pytest.fail("trained a held run")
    )
    plan = runner.build_plan(2, ["base"], [0], ["synthetic"], str(data_root), "tiny", {})
    runner.read_data(plan, generate=False)
    leases = mlstore.lease_dir(store["uri"], Path(store["work"]))
    with mlstore.run_lease(leases, runner.lease_key(plan[0])) as holder:
        assert holder is None  # this test holds it, as a training process would
        assert run_cli.main(_args(store, data_root)) == 0
    out = capsys.readouterr().out
    assert f"being trained by pid {os.getpid()}" in out and "left to the process(es)" in out
    client, exp = MlflowClient(store["uri"]), None
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    assert not client.search_runs([exp.experiment_id], "tags.kind = 'child'")  # no second run


def test_the_lease_ends_with_its_holder(tmp_path):
    with mlstore.run_lease(tmp_path, "x") as first:
        assert first is None
        with mlstore.run_lease(tmp_path, "x") as second:  # another open file: refused while held
            assert second is not None and f"pid {os.getpid()}" in second
        with mlstore.run_lease(tmp_path, "y") as other:
            assert other is None
    with mlstore.run_lease(tmp_path, "x") as again:
        assert again is None


def test_a_run_finished_meanwhile_is_not_trained_again(store, data_root, capsys, monkeypatch):
    monkeypatch.setattr("ablations.runner._train_one", lambda *a, **k: pytest.fail("trained twice"))
    plan = runner.build_plan(2, ["base"], [0], ["synthetic"], str(data_root), "tiny", {})
    splits = runner.load_todo(plan, runner.read_data(plan))
    client = mlstore.open_store(store["uri"])
    runner.mark_existing(plan, client)
    assert plan[0].status == "new"
    # Another process finishes it after this plan was made.
    p = plan[0]
    exp_id = mlstore.get_or_create_experiment(client, p.experiment)
    done = client.create_run(exp_id, run_name=p.name, tags=runner._child_tags(p))
    client.log_metric(done.info.run_id, "val/rank1", 50.0)  # its final evaluation
    client.set_terminated(done.info.run_id, "FINISHED")
    leases = mlstore.lease_dir(store["uri"], Path(store["work"]))
    assert runner.execute(plan, client, Path(store["work"]), {}, splits, leases=leases) == []
    assert "finished meanwhile by another process" in capsys.readouterr().out
    assert p.status == "done" and p.run_id == done.info.run_id


# ------------------------------------------------------------------ checkpoints belong to their store


def test_checkpoints_are_named_by_their_run_and_kept_per_store(data_root, tmp_path):
    plan = runner.build_plan(2, ["base"], [0], ["synthetic"], str(data_root), "tiny", {})
    p = plan[0]
    assert runner.checkpoint_path(tmp_path, p) is None  # no run yet: nothing to resume from
    a = runner.checkpoint_path(tmp_path, dataclasses.replace(p, run_id="a" * 32))
    b = runner.checkpoint_path(tmp_path, dataclasses.replace(p, run_id="b" * 32))
    assert a != b and a.name.startswith("base-s0-")
    one = mlstore.checkpoint_dir(f"sqlite:///{tmp_path / 'one' / 'mlflow.db'}")
    two = mlstore.checkpoint_dir(f"sqlite:///{tmp_path / 'two' / 'mlflow.db'}")
    assert one == tmp_path / "one" / "checkpoints" and one != two
    assert mlstore.checkpoint_dir(mlstore.DEFAULT_TRACKING_URI) == mlstore.MLRUNS / "checkpoints"


@pytest.mark.slow
def test_a_second_store_never_starts_from_the_firsts_checkpoint(
    store, data_root, tmp_path, monkeypatch
):
    """The same plan on two stores with one --work-dir: the second trains from scratch, and the
    first store's unfinished run keeps its own checkpoint."""
    seen = []
    real = runner.Trainer

    class Spy(real):
        def __init__(self, cfg, data, ckpt_path=None, *a, **k):
            seen.append(Path(ckpt_path))
            super().__init__(cfg, data, ckpt_path, *a, **k)

    monkeypatch.setattr(runner, "Trainer", Spy)
    other = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    argv = ("--keep-checkpoints", "--set", "train.epochs=1")
    assert run_cli.main(_args(store, data_root, *argv)) == 0
    assert run_cli.main(_args({"uri": other, "work": store["work"]}, data_root, *argv)) == 0
    assert len(seen) == 2 and seen[0] != seen[1] and all(p.exists() for p in seen)
    ids = [
        MlflowClient(u)
        .search_runs(
            [MlflowClient(u).get_experiment_by_name("table2-synthetic-tiny").experiment_id],
            "tags.kind = 'child'",
        )[0]
        .info.run_id
        for u in (store["uri"], other)
    ]
    assert [p.stem.rsplit("-", 1)[1] for p in seen] == ids
    mlflow.set_tracking_uri(store["uri"])


# ------------------------------------------------------------------ the other commands


def test_tune_refuses_a_holdout_that_cannot_feed_a_batch_before_any_run(store, data_root, capsys):
    from ablations import tune

    argv = [
        "--variant",
        "g",
        "--trials",
        "1",
        "--preset",
        "tiny",
        "--tracking-uri",
        store["uri"],
        "--root",
        str(data_root),
        "--holdout",
        "0.99",
    ]
    assert tune.main(argv) == 2
    assert "lower data.num_ids" in _one_line_error(capsys)
    client = MlflowClient(store["uri"])
    running = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
        if r.info.status == "RUNNING"
    ]
    assert running == []  # no parent left RUNNING for ever


def test_tune_names_its_own_flag_for_a_row_setting(store, data_root, capsys):
    from ablations import tune

    argv = [
        "--variant",
        "g",
        "--trials",
        "1",
        "--preset",
        "tiny",
        "--tracking-uri",
        store["uri"],
        "--root",
        str(data_root),
        "--set",
        "model.attention=cfa",
    ]
    assert tune.main(argv) == 2
    err = _one_line_error(capsys)
    assert "choose rows with --variant instead" in err and "--variants" not in err


def test_tune_takes_its_training_seed_from_set(data_root):
    from ablations import optuna_study

    opts = optuna_study.TuneOptions(
        "g", 1, preset="tiny", root=str(data_root), sets={"train.seed": "4"}
    )
    assert optuna_study.plan_for(opts, {}).seed == 4


def test_the_runs_view_of_a_tuning_experiment_lists_its_trials():
    from types import SimpleNamespace

    from ablations import ui

    assert (
        ui.facets(SimpleNamespace(name="tune-g-synthetic-tiny"))["searchFilter"]
        == "tags.kind = 'trial'"
    )
    assert (
        ui.facets(SimpleNamespace(name="table2-synthetic-tiny"))["searchFilter"]
        == "tags.kind = 'child'"
    )


def test_evaluate_never_generates_data_where_a_moved_run_read_it(tmp_path):
    from ablations.evaluate import check_run_root

    cfg = preset_config("tiny", {"data.root": str(tmp_path / "moved-away")})
    with pytest.raises(FTNError, match="no longer holds it.*pass --root"):
        check_run_root(cfg.data)
    assert not (tmp_path / "moved-away").exists()
    (tmp_path / "moved-away").mkdir()  # the folder is there, the benchmark is not
    with pytest.raises(FTNError, match="the synthetic benchmark from"):
        check_run_root(cfg.data)
    real = override(cfg, {"data.dataset": "market1501"})
    with pytest.raises(FTNError, match="read market1501 from"):
        check_run_root(override(real, {"data.root": str(tmp_path / "gone")}).data)


# ------------------------------------------------------------------ --jobs


def test_without_jobs_drops_only_the_jobs_flag():
    assert run_cli.without_jobs(["--table", "2", "--jobs", "3", "--seeds", "0"]) == [
        "--table",
        "2",
        "--seeds",
        "0",
    ]
    assert run_cli.without_jobs(["--jobs=2", "--variants", "base"]) == ["--variants", "base"]


@pytest.mark.slow
def test_jobs_share_the_plan_and_stop_together(store, data_root, tmp_path):
    """Two jobs train two runs side by side, each exactly once; Ctrl-C stops both jobs (their
    runs KILLED) and the same command finishes them."""
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[1]
    argv = [
        sys.executable,
        str(repo / "ablations" / "run.py"),
        *_args(store, data_root, "--seeds", "0", "1"),
        "--set",
        "train.epochs=20",
        "--set",
        "train.max_batches=1",
        "--set",
        "train.eval_every=0",
        "--jobs",
        "2",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, deadline = [], time.time() + 240
    for line in proc.stdout:  # wait until both jobs have trained an epoch (of 20: neither is done)
        seen.append(line)
        training = {s.split("]")[0] for s in seen if s.startswith("[job ") and " epoch " in s}
        if len(training) == 2 or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out = "".join(seen) + proc.communicate(timeout=180)[0]
    assert proc.returncode == 130, out
    assert "[job 1]" in out and "[job 2]" in out and "1 thread(s) each" in out
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'child'")
    assert sorted(r.info.run_name for r in runs) == ["base-s0", "base-s1"]
    assert {r.info.status for r in runs} == {"KILLED"}
    assert run_cli.main(argv[2:-2]) == 0  # resumes, no --jobs (in this process)
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'child'")
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        ("base-s0", "FINISHED"),
        ("base-s1", "FINISHED"),
    ]


def test_tune_refuses_a_missing_init_file_before_any_run(store, data_root, tmp_path, capsys):
    from ablations import tune

    argv = [
        "--variant",
        "g",
        "--trials",
        "1",
        "--preset",
        "tiny",
        "--tracking-uri",
        store["uri"],
        "--root",
        str(data_root),
        "--set",
        f"model.init={tmp_path / 'nope.pt'}",
    ]
    assert tune.main(argv) == 2
    assert "nope.pt" in _one_line_error(capsys)
    assert _no_store(store)
