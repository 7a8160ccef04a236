"""Per-run logging into the MLflow store (``ablations.store``): metrics by epoch, the dataset
as an input, a run's artifacts (config.json, metrics.json, cmc.png, model.pt, per_query.npz), its
LoggedModel, and the machine and commit it ran on.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from ablations.store import CMC_PNG, CONFIG_JSON, METRICS_JSON, MODEL_PT, PER_QUERY, REPO


def machine() -> str:
    """The hardware a run trains on, for its ``machine`` tag: CPU model, cores and vector
    extension (bf16 where native), torch's thread count, and the GPUs when CUDA has any."""
    import platform

    import torch

    from ftn_core.engine import native_bf16_cpu

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
            )
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    isa = torch.backends.cpu.get_cpu_capability()
    text = (
        f"{model} ({os.cpu_count()} cores, {isa}{' with bf16' if native_bf16_cpu() else ''}), "
        f"{torch.get_num_threads()} torch thread{'s' if torch.get_num_threads() != 1 else ''}"
    )
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        text += "; " + ", ".join(f"{names.count(n)}× {n}" for n in dict.fromkeys(names))
    return text


def git_commit() -> str:
    """HEAD of the repository, with ``-dirty`` when the work tree has changes; else 'unknown'."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_extras() -> bool:
    """Whether a training run logs its extras: ``cmc.png``, ``ranklist.png``, the LoggedModel,
    MLflow's system metrics, and what reports read of its model (``efficiency.json``,
    ``figure_data.npz``: ``ablations.measures``; ``per_query.py`` adds them later). On unless the environment sets ``FTN_LOG_EXTRAS=0`` (the test
    suite does, outside the tests that check them: they take seconds a run)."""
    return os.environ.get("FTN_LOG_EXTRAS", "1") != "0"


class RunLogger:
    """The engine's ``Callbacks`` for one MLflow run: metrics by epoch."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, run_id=self.run_id)

    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        pass


def log_dataset(splits: Any) -> None:
    """The dataset as read, every split, as an MLflow dataset input (paths relative to the
    dataset root; its MLflow digest is the suite's data digest, which names the data the run saw)."""
    import pandas as pd

    root = Path(splits.root)
    parts = (("train", splits.train), ("query", splits.query), ("gallery", splits.gallery))
    df = pd.DataFrame(
        [
            (split, os.path.relpath(s.path, root), s.pid, s.camid)
            for split, items in parts
            for s in items
        ],
        columns=["split", "path", "pid", "camid"],
    )
    with warnings.catch_warnings():  # MLflow's hints on int columns and local sources
        warnings.simplefilter("ignore", UserWarning)
        ds = mlflow.data.from_pandas(
            df, source=str(root), name=splits.name, targets="pid", digest=splits.digest or None
        )
        mlflow.log_input(ds, context="training")


def per_query_arrays(
    per_query: dict[str, Any], query_pids: list[int], query_camids: list[int]
) -> dict[str, Any]:
    """The ``per_query.npz`` arrays: the engine's per-query results with each query's pid and camid."""
    import numpy as np

    index = np.asarray(per_query["index"], dtype=np.int64)
    return {
        "index": index,
        "pid": np.asarray(query_pids, dtype=np.int64)[index],
        "camid": np.asarray(query_camids, dtype=np.int64)[index],
        "ap": np.asarray(per_query["ap"], dtype=np.float64),
        "first_rank": np.asarray(per_query["first_rank"], dtype=np.int64),
        "inp": np.asarray(per_query["inp"], dtype=np.float64),
        "top10": np.asarray(per_query["top"], dtype=np.int64),
    }


def log_per_query(arrays: dict[str, Any], run_id: str) -> None:
    """``per_query.npz`` (``per_query_arrays``) as an artifact of the run ``run_id``."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / PER_QUERY
        np.savez_compressed(out, **arrays)
        MlflowClient().log_artifact(run_id, str(out))


def log_run_artifacts(
    config: dict[str, Any],
    metrics: dict[str, float],
    cmc: list[float],
    state_dict: dict[str, Any] | None,
    title: str,
    per_query: dict[str, Any] | None = None,
) -> None:
    """config.json, metrics.json, cmc.png (an extra: ``log_extras``), model.pt (a state dict)
    and, given ``per_query`` (``per_query_arrays``), per_query.npz of the active run."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / CONFIG_JSON).write_text(json.dumps(config, indent=2, default=list))
        (out / METRICS_JSON).write_text(json.dumps({"metrics": metrics, "cmc": cmc}, indent=2))
        if cmc and log_extras():
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
            ranks = list(range(1, len(cmc) + 1))
            ax.plot(ranks, [100 * c for c in cmc], marker=".", markersize=3)
            ax.set(
                xlabel="rank",
                ylabel="matching rate (%)",
                title=title,
                xlim=(1, len(cmc)),
                ylim=(0, 100),
            )
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(out / CMC_PNG)
            plt.close(fig)
        if state_dict is not None:
            torch.save(state_dict, out / MODEL_PT)
        if per_query is not None:
            import numpy as np

            np.savez_compressed(out / PER_QUERY, **per_query)
        mlflow.log_artifacts(str(out))


def log_embedding_model(model: Any, metrics: dict[str, float], splits: Any) -> str:
    """The final model in MLflow 3's own form: a LoggedModel named ``model`` linked to the active
    run, a pyfunc that takes images (encoded bytes, or pixels at their original size) and returns
    their embeddings (``ablations/served_model.py``; ``mlflow models serve -m runs:/<run>/model``
    serves it). Its artifacts are the weights (a state dict: nothing pickled) and the run's
    config.json, which ``log_run_artifacts`` logged just before; ``ablations.models.load_embedder``
    loads it, and the pytorch-flavour models of earlier runs. The val metrics and the test dataset
    are the model's params (linking them as LoggedModel metrics would log each one a second time
    into the run's history); the first query image is its input example."""
    from ablations.logged_model import log_served_model

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    params = {k: f"{v:.4f}" for k, v in metrics.items() if k.startswith("val/")}
    params.update(
        {
            "dataset": splits.name,
            "dataset_root": str(splits.root),
            "test_images": str(len(splits.query) + len(splits.gallery)),
        }
    )
    return log_served_model(state, splits.query[0].path if splits.query else None, params)


END_TRIES = 6
"""How often a run's end status is written before giving up (another job may hold the SQLite
store's write lock: 0.25 s, 0.5 s, … 8 s apart)."""


def _terminate(run_id: str, status: str) -> None:
    for i in range(END_TRIES):
        try:
            MlflowClient().set_terminated(run_id, status)
            return
        except Exception:  # noqa: BLE001 - "database is locked" comes as several types
            if i == END_TRIES - 1:
                raise
            time.sleep(0.25 * 2**i)


def end_run(status: str) -> None:
    """End the active run as ``status``. MLflow pops its active run before it writes the status,
    so a write that fails (the store locked by another job) is retried here; and a run never stays
    active for MLflow's exit hook, which would end it FINISHED (``end_unfinished_runs_killed``)."""
    run = mlflow.active_run()
    if run is None:
        return
    try:
        mlflow.end_run(status)
    except Exception:  # noqa: BLE001 - written again below, whatever failed
        while (
            mlflow.active_run() is not None and mlflow.active_run().info.run_id == run.info.run_id
        ):
            mlflow.tracking.fluent._active_run_stack.get().pop()
        _terminate(run.info.run_id, status)


def _kill_active_runs() -> None:
    """At exit: a run still active was not ended by the code that trains it (a second Ctrl-C, an
    error while it was being ended): it is KILLED, never FINISHED."""
    while (run := mlflow.active_run()) is not None:
        with contextlib.suppress(Exception):
            end_run("KILLED")
        if mlflow.active_run() is run:  # could not be popped: stop trying
            break


def end_unfinished_runs_killed() -> None:
    """Replace MLflow's exit hook, which ends a run still active as FINISHED (so an interrupted
    run, with no final metrics, would read as done), by one that ends it KILLED."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    hook = getattr(fluent, "_safe_end_run", None)
    if hook is not None:
        atexit.unregister(hook)
    atexit.unregister(_kill_active_runs)
    atexit.register(_kill_active_runs)
