"""Shared fixtures: one shrunk configuration (tiny preset, CPU, no workers, temp folders)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Two threads at most: CI has two cores, and subprocess tests run beside the main process. Under
# pytest-xdist (`make test`: two workers), one thread per worker and for the processes it starts
# (so that a run in a subprocess and its reference in the worker compute alike).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
torch.set_num_threads(min(2, torch.get_num_threads()))
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# System metrics every second, so that short test runs log some.
os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")


@pytest.fixture(scope="session", autouse=True)
def file_cache(tmp_path_factory) -> Path:
    """The data digests' file cache in a temporary folder (subprocesses inherit it), never ~/.cache."""
    folder = tmp_path_factory.mktemp("ftn_cache")
    os.environ["FTN_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def migrated_once(tmp_path_factory) -> Iterator[None]:
    """MLflow's schema migrations (seconds) run once per session, in this process: every new
    SQLite store it creates after that (``open_store``, ``MlflowClient``) gets a page-by-page
    copy of that first migrated schema through SQLite's backup API, the same tables and
    revision. Other databases, and subprocesses, migrate as usual."""
    import sqlite3
    import threading

    import mlflow.store.db.utils as db_utils
    import sqlalchemy

    migrate = db_utils._initialize_tables
    template: list[Path] = []
    lock = threading.Lock()

    def initialize(engine) -> None:
        if engine.dialect.name != "sqlite":
            return migrate(engine)
        with lock:
            if not template:
                path = tmp_path_factory.mktemp("migrated") / "mlflow.db"
                made = sqlalchemy.create_engine(f"sqlite:///{path}")
                try:
                    migrate(made)
                finally:
                    made.dispose()
                template.append(path)
        source = sqlite3.connect(template[0])
        target = engine.raw_connection()
        try:
            source.backup(target.driver_connection)
        finally:
            target.close()
            source.close()

    patch = pytest.MonkeyPatch()
    patch.setattr(db_utils, "_initialize_tables", initialize)
    yield
    patch.undo()


LIGHT_RUNS = {
    "test_data_identity",
    "test_init",
    "test_pretrain",
    "test_reliability",
    "test_run_ownership",
    "test_runner",
    "test_study",
    "test_verdict_integrity",
}
"""Modules whose training runs leave out the extras (``FTN_LOG_EXTRAS=0``: system metrics,
``cmc.png``, ``ranklist.png``, the LoggedModel; seconds a run), but in tests marked
``full_logging``. Module-scoped fixtures set up before it, with the extras."""


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "full_logging: training runs log their extras (system "
        "metrics, cmc.png, ranklist.png, the LoggedModel) in a module of "
        "LIGHT_RUNS",
    )


@pytest.fixture(autouse=True)
def light_runs(request, monkeypatch) -> None:
    """``FTN_LOG_EXTRAS=0`` in the modules of ``LIGHT_RUNS`` (subprocesses inherit it)."""
    module = request.node.module.__name__.rsplit(".", 1)[-1] if request.node.module else ""
    if module in LIGHT_RUNS and request.node.get_closest_marker("full_logging") is None:
        monkeypatch.setenv("FTN_LOG_EXTRAS", "0")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A folder where the tiny synthetic benchmark is generated once per test session."""
    root = tmp_path_factory.mktemp("ftn_data")
    from ftn_core.data.synthetic import generate

    generate(str(root), "tiny", 0)
    return root


@pytest.fixture
def tiny_cfg(data_root):
    """The ``tiny`` preset on the session's synthetic data, on the CPU."""
    from ftn_core.presets import preset_config

    return preset_config("tiny", {"data.root": str(data_root), "train.device": "cpu"})


@pytest.fixture
def store(tmp_path) -> dict[str, str]:
    """A fresh MLflow SQLite store and checkpoint folder for one test."""
    return {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "work": str(tmp_path / "ckpt")}
