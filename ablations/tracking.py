"""MLflow glue: the store, experiments, run lookup for resuming, and per-run logging.

Store layout (DESIGN §6): ``sqlite:///<repo>/mlruns/mlflow.db`` with artifacts under
``<repo>/mlruns/artifacts/<experiment>``. One experiment per table × dataset × preset, one
parent run per invocation, one child run per variant × seed named ``<variant>-s<seed>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import logging
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from ftn_core.errors import FTNError

REPO = Path(__file__).resolve().parents[1]
MLRUNS = REPO / "mlruns"
DEFAULT_TRACKING_URI = f"sqlite:///{MLRUNS / 'mlflow.db'}"


def experiment_name(table: int, dataset: str, preset: str) -> str:
    return f"table{table}-{dataset}-{preset}"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_store(uri: str | None = None) -> MlflowClient:
    """Point MLflow at ``uri`` (default: the repo's SQLite file) and create the store once.

    Several processes creating a new SQLite store at once corrupt its schema, so creation
    (schema migrations) happens under a file lock beside the database.
    """
    uri = uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
                raise PermissionError(f"{db} is not writable")
        except OSError as err:
            raise FTNError(f"cannot write the tracking store {uri} ({err}); fix the permissions "
                           f"or pass --tracking-uri") from None
    elif not uri.startswith(("http://", "https://", "postgresql", "mysql", "databricks")):
        raise FTNError(f"--tracking-uri {uri}: unsupported (the file store is an error in MLflow 3); "
                       f"use sqlite:///path/to/mlflow.db or http://host:port")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no INFO line per system-metrics thread
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    try:
        if uri.startswith("sqlite:///"):
            with _file_lock(Path(uri[len("sqlite:///"):]).with_suffix(".lock")):
                client.search_experiments(max_results=1)
        else:
            client.search_experiments(max_results=1)
    except Exception as err:  # an unreachable server, a corrupt file, a read-only database
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FTNError(f"cannot open the tracking store {uri} ({first[:200]}); "
                       f"check the path or server, or pass another --tracking-uri") from None
    return client


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    artifact_location = None
    if client.tracking_uri.startswith("sqlite:///"):
        db = Path(client.tracking_uri[len("sqlite:///"):])
        artifact_location = (db.parent / "artifacts" / name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:  # another worker created it first
        return client.get_experiment_by_name(name).experiment_id


def child_runs(client: MlflowClient, experiment_id: str) -> dict[tuple[str, int, str], Run]:
    """Child runs keyed by (variant, seed, config hash): a FINISHED one wins, else the newest."""
    runs = client.search_runs([experiment_id], filter_string="tags.kind = 'child'",
                              order_by=["attributes.start_time DESC"], max_results=50000)
    out: dict[tuple[str, int, str], Run] = {}
    for run in runs:
        tags = run.data.tags
        key = (tags.get("variant", ""), int(tags.get("seed", -1)), tags.get("config_hash", ""))
        if key not in out or (run.info.status == "FINISHED" and out[key].info.status != "FINISHED"):
            out[key] = run
    return out


def git_commit() -> str:
    """HEAD of the repository, with ``-dirty`` when the work tree has changes; else 'unknown'."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunLogger:
    """The engine's ``Callbacks`` for one MLflow run: metrics by epoch."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, run_id=self.run_id)

    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        pass


def log_dataset(splits: Any) -> None:
    """The training split as an MLflow dataset input (paths relative to the dataset root)."""
    import pandas as pd

    root = Path(splits.root)
    df = pd.DataFrame({"path": [os.path.relpath(s.path, root) for s in splits.train],
                       "pid": [s.pid for s in splits.train], "camid": [s.camid for s in splits.train]})
    with warnings.catch_warnings():  # MLflow's hints on int columns and local sources
        warnings.simplefilter("ignore", UserWarning)
        ds = mlflow.data.from_pandas(df, source=str(root), name=splits.name, targets="pid")
        mlflow.log_input(ds, context="training")


def log_run_artifacts(config: dict[str, Any], metrics: dict[str, float], cmc: list[float],
                      state_dict: dict[str, Any] | None, title: str) -> None:
    """config.json, metrics.json, cmc.png and model.pt (a state dict) of the active run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "config.json").write_text(json.dumps(config, indent=2, default=list))
        (out / "metrics.json").write_text(json.dumps({"metrics": metrics, "cmc": cmc}, indent=2))
        if cmc:
            fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
            ranks = list(range(1, len(cmc) + 1))
            ax.plot(ranks, [100 * c for c in cmc], marker=".", markersize=3)
            ax.set(xlabel="rank", ylabel="matching rate (%)", title=title, xlim=(1, len(cmc)), ylim=(0, 100))
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(out / "cmc.png")
            plt.close(fig)
        if state_dict is not None:
            torch.save(state_dict, out / "model.pt")
        mlflow.log_artifacts(str(out))
