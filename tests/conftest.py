"""Shared fixtures: one shrunk configuration (tiny preset, CPU, no workers, temp folders)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Two threads at most: CI has two cores, and subprocess tests run beside the main process.
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
