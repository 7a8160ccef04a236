"""Nothing lost, nothing silent: the store under concurrent starts and Ctrl-C, the plan checked
before any run exists, Ctrl-C during a checkpoint write, and every CLI's bad values."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablations import run as run_cli
from ablations import store as mlstore
from ablations.runner import build_plan
from ftn_core import checkpoint as ckpt
from ftn_core.errors import FTNError

REPO = Path(__file__).resolve().parents[1]
OPEN = "import sys; sys.path.insert(0, {repo!r}); from ablations.store import open_store; open_store({uri!r})"


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT name, status FROM runs").fetchall()


# --------------------------------------------------------------------------- the store


@pytest.mark.slow
def test_processes_starting_together_on_a_new_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN.format(repo=str(REPO), uri=uri)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    assert mlstore.sqlite_state(tmp_path / "new" / "mlflow.db") == ("current", 0)
    assert MlflowClient(uri).get_experiment("0").name == "Default"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [
        "mlflow.db"
    ]  # no lock file left


def test_the_store_lock_excludes_and_is_gone_once_released(tmp_path):
    """Holders take turns (a waiter that wakes on a removed lock file locks the current one)
    and the lock file exists only while the lock is held or awaited."""
    import threading

    lock, inside, overlaps = tmp_path / "x.lock", [], []

    def work():
        for _ in range(20):
            with mlstore._file_lock(lock):
                inside.append(1)
                overlaps.append(len(inside))
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) == 1 and len(overlaps) == 80
    assert not lock.exists()


# ablations/run.py as a script (argv[2:]), its schema writing held for a minute after the
# first statement, the file argv[1] created then: a signal always lands half-way, however fast
# the machine.
SLOW_CREATION = """
import pathlib, runpy, sys, time
import mlflow.store.db.utils as db_utils
import sqlalchemy
initialize = db_utils._initialize_tables
def held(engine):
    held_once = []
    def pause(*args):
        if not held_once:
            held_once.append(1)
            pathlib.Path(held_at).touch()
            time.sleep(60)
    sqlalchemy.event.listen(engine, "after_cursor_execute", pause)
    initialize(engine)
db_utils._initialize_tables = held
held_at, sys.argv = sys.argv[1], sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_sigint_while_the_store_is_created_leaves_nothing_broken(tmp_path):
    """A real SIGINT sent while the schema is being written (its temporary file exists)."""
    folder = tmp_path / "mlruns"
    db = folder / "mlflow.db"
    uri = f"sqlite:///{db}"
    held = tmp_path / "held"
    argv = [
        str(REPO / "ablations" / "run.py"),
        "--table",
        "2",
        "--preset",
        "tiny",
        "--variants",
        "base",
        "--tracking-uri",
        uri,
        "--work-dir",
        str(tmp_path / "w"),
        "--root",
        str(tmp_path / "data"),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CREATION, str(held), *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.time()
    while proc.poll() is None and not held.exists() and time.time() - t0 < 120:
        time.sleep(0.005)
    assert list(folder.glob(".mlflow.db.creating-*")), "no store being created"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in _one_line(err)
    assert not db.exists() or mlstore.sqlite_state(db)[0] == "current"
    client = mlstore.open_store(uri)  # the next start works
    assert client.search_experiments()[0].name == "Default"
    assert not list(folder.glob(".mlflow.db.creating-*"))


def test_a_half_created_store_without_runs_is_recreated(tmp_path, capsys):
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.initial_models import Base

    db = tmp_path / "mlflow.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)  # the first tables, no migrations: an interrupted first start
    engine.dispose()
    assert mlstore.sqlite_state(db) == ("stale", 0)
    client = mlstore.open_store(f"sqlite:///{db}")
    assert client.search_experiments()[0].name == "Default"
    assert mlstore.sqlite_state(db) == ("current", 0)
    assert "left half-created by an interrupted start" in capsys.readouterr().err
    assert len(list(tmp_path.glob("mlflow.db.broken-*"))) == 1  # the old file is kept


def test_a_store_of_another_schema_with_runs_is_refused_not_touched(tmp_path):
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = mlstore.open_store(uri)
    client.create_run(client.create_experiment("e"))
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = 'someoldrev'")
    before = db.read_bytes()
    with pytest.raises(FTNError, match=r"schema is not the one this MLflow .* mlflow db upgrade"):
        mlstore.open_store(uri)
    assert db.read_bytes() == before


@pytest.mark.parametrize("case", ["not_a_store", "unwritable", "closed_port", "no_driver"])
def test_store_problems_are_one_line(tmp_path, capsys, case):
    if case == "not_a_store":
        (tmp_path / "mlflow.db").write_text("my notes, not a database\n")
        uri, message = f"sqlite:///{tmp_path / 'mlflow.db'}", "is not an MLflow store"
    elif case == "unwritable":
        uri, message = "sqlite:////proc/mlflow.db", "cannot write the tracking store"
    elif case == "closed_port":
        uri, message = f"http://127.0.0.1:{_free_port()}", "cannot reach the tracking store"
    else:
        pytest.importorskip("sqlalchemy")
        try:
            import pg8000  # noqa: F401

            pytest.skip("pg8000 is installed")
        except ImportError:
            pass
        uri, message = (
            "postgresql+pg8000://user@127.0.0.1:1/db",
            "driver is not installed (No module named 'pg8000')",
        )
    t0 = time.perf_counter()
    code = run_cli.main(
        [
            "--table",
            "2",
            "--preset",
            "tiny",
            "--tracking-uri",
            uri,
            "--work-dir",
            str(tmp_path / "w"),
            "--root",
            str(tmp_path / "data"),
        ]
    )
    assert code == 2 and time.perf_counter() - t0 < 20
    line = _one_line(capsys.readouterr().err)
    assert message in line and line.endswith(("--tracking-uri", "postgresql+psycopg2://"))
    assert not (tmp_path / "w").exists() and not (tmp_path / "data").exists()
    assert not list(tmp_path.glob("*.lock"))


@pytest.mark.slow
@pytest.mark.parametrize("form", ["script", "command"])
def test_ctrl_c_while_run_py_starts_is_one_line(tmp_path, form):
    """SIGINT while the command still imports torch and MLflow (``python ablations/run.py``, or the
    installed ``ftn-run``): one line, exit 130, nothing made."""
    start = (
        [sys.executable, str(REPO / "ablations" / "run.py")]
        if form == "script"
        else [str(Path(sys.executable).with_name("ftn-run"))]
    )
    cmd = [
        *start,
        "--table",
        "2",
        "--preset",
        "tiny",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
        "--root",
        str(tmp_path / "data"),
        "--work-dir",
        str(tmp_path / "ckpt"),
    ]
    for delay in (0.5, 2.0):
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "interrupted" in _one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the plan


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--seeds", "-1"], None),  # argparse: "argument --seeds: -1 is below 0"
        (["--set", "train.epochs=0"], "train.epochs=0: must be an integer ≥ 1"),
        (["--set", "train.lr=nan"], "train.lr=nan: must be a finite number > 0"),
        (["--set", "data.num_instances=1"], "data.num_instances=1: must be at least 2"),
        (["--set", "train.milestones=5,3"], "train.milestones=(5, 3): must be increasing"),
        (
            ["--set", "train.device=gpu0"],
            "train.device=gpu0: must be auto, cpu, mps, cuda or cuda:N",
        ),
        (
            ["--variants", "a", "--set", "model.mask=gm_pam"],
            "--set model.mask=gm_pam: Table 2's rows set model.mask",
        ),
        (
            ["--variants", "d", "--set", "model.attention=pamcam"],
            "--set model.attention=pamcam: Table 2's rows set",
        ),
        (
            ["--work-dir", "/proc/ftn-ckpt"],
            "--work-dir /proc/ftn-ckpt: cannot write checkpoints there",
        ),
    ],
)
def test_bad_plans_are_refused_before_anything_exists(tmp_path, capsys, extra, message):
    db = tmp_path / "mlruns" / "mlflow.db"
    argv = [
        "--table",
        "2",
        "--preset",
        "tiny",
        "--tracking-uri",
        f"sqlite:///{db}",
        "--work-dir",
        str(tmp_path / "w"),
        "--root",
        str(tmp_path / "data"),
        *extra,
    ]
    try:
        code = run_cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    if message is None:
        assert "argument --seeds: -1 is below 0" in err
    else:
        assert message in _one_line(err)
    assert (
        not db.parent.exists()
        and not (tmp_path / "w").exists()
        and not (tmp_path / "data").exists()
    )


def test_repeated_seeds_and_datasets_train_once(tmp_path):
    plan = build_plan(
        2, ["base", "g"], [0, 1, 0], ["synthetic", "synthetic"], str(tmp_path), "tiny", {}
    )
    assert [p.name for p in plan] == [
        "base-s0",
        "g-s0",
        "base-s1",
        "g-s1",
    ]  # seed-major: whole seeds first


def test_a_set_outside_the_table_axis_applies_to_every_row(tmp_path):
    plan = build_plan(
        2, ["a", "g"], [0], ["synthetic"], str(tmp_path), "tiny", {"loss.w_grad": "0.5"}
    )
    assert [p.cfg.loss.w_grad for p in plan] == [0.5, 0.5]
    assert [p.cfg.model.mask for p in plan] == ["gm", "gm_pam_cam"]
    assert {p.overrides for p in plan} == {
        "loss.w_grad=0.5"
    }  # tagged on the runs, shown in reports


# --------------------------------------------------------------------------- Ctrl-C in a checkpoint write


@pytest.mark.slow
def test_sigint_during_a_checkpoint_write_is_killed_and_each_epoch_logged_once(
    store, data_root, monkeypatch, capsys
):
    original = ckpt.save_atomic
    calls = []

    def save_with_sigint(obj, path):
        calls.append(obj["epoch"])
        if len(calls) == 1:  # a real SIGINT lands in the middle of the first write
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        original(obj, path)

    monkeypatch.setattr(ckpt, "save_atomic", save_with_sigint)
    argv = [
        "--table",
        "2",
        "--preset",
        "tiny",
        "--variants",
        "c",
        "--tracking-uri",
        store["uri"],
        "--work-dir",
        store["work"],
        "--root",
        str(data_root),
        "--set",
        "train.epochs=3",
        "--set",
        "train.eval_every=3",
    ]
    assert run_cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted during epoch 2; checkpoint of the last finished epoch (epoch 1)" in err
    assert "Traceback" not in err
    ckpts = list((Path(store["work"]) / "table2-synthetic-tiny").glob("c-s0-*.pt"))
    assert len(ckpts) == 1 and ckpt.load(ckpts[0])["epoch"] == 0  # the first write completed
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'child'")
    assert run.info.status == "KILLED"

    monkeypatch.setattr(ckpt, "save_atomic", original)
    assert run_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "c-s0 epoch 2/3:" in out  # no terminal: one line per epoch
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_ce")]
    assert steps == [1, 2, 3]  # each epoch logged exactly once across the two starts
    assert not ckpts[0].exists()  # a FINISHED run's checkpoint is deleted


def test_a_checkpoint_of_another_precision_is_not_resumed_and_stays_for_its_machine(
    store, data_root, monkeypatch, capsys
):
    """A run interrupted on a machine that trains in one precision is never resumed where
    `train.amp` gives another (its epochs would mix the two under one tag): it stays KILLED,
    with its checkpoint and its precision, and resumes where the precision is its own."""
    original = ckpt.save_atomic

    def save_then_sigint(obj, path):
        original(obj, path)
        os.kill(os.getpid(), signal.SIGINT)  # after the first epoch's checkpoint

    monkeypatch.setattr(ckpt, "save_atomic", save_then_sigint)
    argv = ["--table", "2", "--preset", "tiny", "--variants", "c", "--set", "train.epochs=2"]
    argv += ["--tracking-uri", store["uri"], "--work-dir", store["work"]]
    argv += ["--root", str(data_root)]
    assert run_cli.main(argv) == 130
    monkeypatch.setattr(ckpt, "save_atomic", original)
    (path,) = (Path(store["work"]) / "table2-synthetic-tiny").glob("c-s0-*.pt")
    state = ckpt.load(path)
    here = state["precision"]  # what this machine trains in
    other = "fp16" if here != "fp16" else "bf16"  # as if another machine had started it
    ckpt.save_atomic({**state, "precision": other}, path)
    capsys.readouterr()
    assert run_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"its checkpoint trained 1 epoch(s) in {other} and this machine trains in {here}" in err
    assert "1 run(s) did not finish (their errors above): c-s0" in err and "Traceback" not in err
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'child'")
    assert run.info.status == "KILLED" and run.data.tags["precision"] == other
    assert f"or delete the run (mlflow runs delete --run-id {run.info.run_id})" in err
    assert run.data.tags["error"].startswith("its checkpoint trained 1 epoch(s) in")
    assert path.exists()
    ckpt.save_atomic(state, path)  # back on a machine of its own precision: resumed
    assert run_cli.main(argv) == 0
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["precision"] == here
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_ce")] == [1, 2]


@pytest.mark.slow
def test_keep_checkpoints_and_dry_run_disk(store, data_root, capsys):
    argv = [
        "--table",
        "2",
        "--preset",
        "tiny",
        "--variants",
        "base",
        "--tracking-uri",
        store["uri"],
        "--work-dir",
        store["work"],
        "--root",
        str(data_root),
        "--set",
        "train.epochs=1",
    ]
    assert run_cli.main([*argv, "--keep-checkpoints"]) == 0
    (kept,) = (Path(store["work"]) / "table2-synthetic-tiny").glob("base-s0-*.pt")
    capsys.readouterr()
    assert run_cli.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    size = f"{kept.stat().st_size / 2**20:.0f} MiB"
    assert f"take {size} in {store['work']}" in out
    assert "next: train 0 run(s)" in out or "1 of 1 already done" in out


# --------------------------------------------------------------------------- other commands


# Each command once as a process (reports/build.py: test_reports.py's test_cli_help_and_no_traceback);
# the other bad values through its main(argv), as the script calls it.
@pytest.mark.parametrize(
    "module,argv,message,process",
    [
        (
            "ablations/tune.py",
            ["--variant", "g", "--trials", "1", "--timeout", "-5"],
            "argument --timeout: -5 is outside",
            True,
        ),
        (
            "ablations/tune.py",
            ["--variant", "g", "--trials", "0"],
            "argument --trials: 0 is below 1",
            False,
        ),
        (
            "ablations/tune.py",
            ["--variant", "g", "--trials", "1", "--storage", "{tmp}"],
            "is a folder; give a journal file",
            False,
        ),
        (
            "-m ftn_core.data.synthetic",
            ["--seed", "-5", "--root", "{tmp}/data"],
            "argument --seed: -5 is below 0",
            True,
        ),
        ("-m ftn_core.cost", ["--height", "0"], "argument --height: 0 is below 32", True),
        (
            "reports/build.py",
            ["--out", "/proc/ftn-report"],
            "--out /proc/ftn-report: cannot write the report there",
            False,
        ),
    ],
)
def test_other_commands_refuse_bad_values_in_one_line(
    tmp_path, capsys, module, argv, message, process
):
    import importlib

    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "tune" in module:
        argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--preset", "tiny"]
    if process:
        cmd = (
            [sys.executable, *module.split(), *argv]
            if module.startswith("-m")
            else [sys.executable, module, *argv]
        )
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
        code, err = proc.returncode, proc.stderr
    else:
        name = (
            module.split()[-1]
            if module.startswith("-m")
            else module.removesuffix(".py").replace("/", ".")
        )
        code, err = importlib.import_module(name).main(argv), capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_skip_bad_images_says_and_logs_which(store, data_root, tmp_path, capsys):
    import shutil

    from fixtures_layouts import corrupt_file

    # A copy of the synthetic data read as Market-1501 (a damaged copy of the synthetic data
    # itself is refused whole: it no longer matches what the generator wrote).
    root = tmp_path / "data"
    shutil.copytree(data_root / "synthetic_tiny_s0", root / "Market-1501-v15.09.15")
    bad = sorted((root / "Market-1501-v15.09.15" / "bounding_box_test").glob("*.jpg"))[3]
    corrupt_file(bad, "corrupt_data")
    argv = [
        "--table",
        "2",
        "--preset",
        "tiny",
        "--variants",
        "base",
        "--tracking-uri",
        store["uri"],
        "--work-dir",
        store["work"],
        "--root",
        str(root),
        "--dataset",
        "market1501",
        "--set",
        "train.epochs=1",
    ]
    assert run_cli.main(argv) == 2
    assert f"cannot read image {bad}" in _one_line(capsys.readouterr().err)
    assert run_cli.main([*argv, "--skip-bad-images"]) == 0
    assert f"skipped  1 unreadable image(s), e.g. {bad}" in capsys.readouterr().out
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("table2-market1501-tiny")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'child'")
    assert run.data.tags["skipped_images"] == "1"
    local = client.download_artifacts(run.info.run_id, "skipped_images.txt", str(tmp_path))
    assert Path(local).read_text().split() == [str(bad)]
