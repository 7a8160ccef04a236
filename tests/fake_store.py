"""An MLflow store holding ablation runs laid out exactly as the runner logs them.

Used by the report and MLflow-UI tests so they run without training: the metrics are chosen
by the test (hand-computable), the weights are an untrained ``tiny``-preset model.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from PIL import Image

from ablations import measures
from ablations.variants import variants
from ftn_core.config import Config, config_hash, flatten, override, to_dict
from ftn_core.data.splits import load_splits
from ftn_core.errors import FTNError
from ftn_core.model import build_model
from ftn_core.presets import preset_config

NUM_CLASSES = 16  # identities in the tiny synthetic train split


@dataclass
class FakeRun:
    variant: str
    seed: int
    final: dict[str, float]
    """Final ``val/<name>`` values in percent, e.g. {"rank1": 50, "mAP": 40}; the diagnostics
    too (``fg_focus_norm_stage3``, ``mask_auc_gm`` …) where the test wants them."""
    status: str = "FINISHED"
    epochs: int = 2
    artifacts: bool = True
    extra_tags: dict[str, str] = field(default_factory=dict)
    per_query: dict[str, np.ndarray] | None = None
    """Logged as ``per_query.npz`` when given (``index``, ``pid``, ``camid``, ``ap``,
    ``first_rank``, ``inp``, ``top10``)."""
    model: bool = True
    """Whether ``model.pt`` is among the artifacts, with what a run measures of its model when
    it finishes (``efficiency.json``; ``figure_data.npz`` where its data is readable)."""
    measured: bool = True
    """Whether a run with ``model.pt`` has its measures too (False: a run from before them)."""
    sets: dict[str, object] = field(default_factory=dict)
    """Config changes on top of the row's (a run of the row trained with ``--set``)."""
    grad_ratio: tuple[float, ...] = ()
    """``train/recon_grad_ratio`` of the last ``len(grad_ratio)`` epochs (the earlier ones are
    a frozen warm-up), with ``train/grad_norm_reid`` = 1 and ``grad_norm_recon`` = the ratio."""


def new_store(folder: Path) -> str:
    """An empty SQLite store (migrated once, before anything logs to it)."""
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def run_config(
    preset: str, table: int, variant: str, seed: int, data_root: Path, dataset: str = "synthetic"
) -> Config:
    cfg = preset_config(
        preset, {"data.root": str(data_root), "train.seed": seed, "data.dataset": dataset}
    )
    return next(v for v in variants(table, controls=True) if v.key == variant).apply(cfg)


def log_experiment(
    uri: str,
    folder: Path,
    runs: list[FakeRun],
    table: int = 2,
    dataset: str = "synthetic",
    preset: str = "tiny",
    parent: bool = True,
) -> str:
    """Log ``runs`` as children of one parent run in ``table{N}-{dataset}-{preset}``; returns
    the experiment id. Runs are started in list order (later = newer)."""
    client = MlflowClient(uri)
    name = f"table{table}-{dataset}-{preset}"
    exp = client.get_experiment_by_name(name)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(
            name, artifact_location=(folder / "artifacts" / name).resolve().as_uri()
        )
    )
    labels = {v.key: v.label for v in variants(table, controls=True)}
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        parent_id = None
        if parent:
            with mlflow.start_run(
                experiment_id=exp_id,
                run_name=f"table{table}",
                tags={"kind": "parent", "table": str(table), "dataset": dataset, "preset": preset},
            ) as p:
                parent_id = p.info.run_id
        for r in runs:
            cfg = override(
                run_config(preset, table, r.variant, r.seed, folder / "data", dataset), r.sets
            )
            tags = {
                "kind": "child",
                "table": str(table),
                "variant": r.variant,
                "variant_label": labels[r.variant],
                "seed": str(r.seed),
                "preset": preset,
                "dataset": dataset,
                "git_commit": "0" * 40,
                "config_hash": config_hash(cfg),
                **r.extra_tags,
            }
            mlflow.start_run(
                experiment_id=exp_id,
                run_name=f"{r.variant}-s{r.seed}",
                parent_run_id=parent_id,
                tags=tags,
            )
            mlflow.log_params({k: str(v) for k, v in flatten(cfg).items()})
            _log_metrics(cfg, r)
            if r.artifacts:
                _log_artifacts(cfg, r)
            mlflow.end_run(status=r.status)
    finally:
        mlflow.set_tracking_uri(previous)
    return exp_id


def _log_metrics(cfg: Config, r: FakeRun) -> None:
    for epoch in range(1, r.epochs + 1):
        scale = 1.0 / epoch
        m = {
            "train/loss_ce": 2.0 * scale + 0.1 * r.seed,
            "train/loss_triplet": 0.5 * scale,
            "train/lr": 3.5e-4,
            "train/img_per_s": 100.0,
            "train/epoch_seconds": 1.0,
        }
        if cfg.model.decoder:
            m["train/loss_l1"] = 0.3 * scale
            if cfg.model.gradient_loss:
                m["train/loss_grad"] = 0.05 * scale
        m["train/loss_total"] = sum(v for k, v in m.items() if k.startswith("train/loss_"))
        logged_from = r.epochs - len(r.grad_ratio) + 1
        if epoch >= logged_from:
            ratio = r.grad_ratio[epoch - logged_from]
            m.update(
                {
                    "train/grad_norm_reid": 1.0,
                    "train/grad_norm_recon": ratio,
                    "train/recon_grad_ratio": ratio,
                }
            )
        # val/*: the final value at the last epoch, something lower before it.
        for name, value in r.final.items():
            m[f"val/{name}"] = value if epoch == r.epochs else value / 2
        mlflow.log_metrics(m, step=epoch)


def _log_artifacts(cfg: Config, r: FakeRun) -> None:
    mlflow.log_dict(to_dict(cfg), "config.json")
    rank1 = r.final.get("rank1", 50.0) / 100
    cmc = [min(1.0, rank1 + (1 - rank1) * k / 10) for k in range(50)]  # rises to 1 by rank 11
    mlflow.log_dict(
        {"metrics": {f"val/{k}": v for k, v in r.final.items()}, "cmc": cmc}, "metrics.json"
    )
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, format="PNG")
    mlflow.log_image(Image.open(io.BytesIO(buf.getvalue())), "cmc.png")
    with tempfile.TemporaryDirectory() as tmp:
        if r.per_query is not None:
            np.savez_compressed(Path(tmp) / "per_query.npz", **r.per_query)
            mlflow.log_artifact(str(Path(tmp) / "per_query.npz"))
        if r.model:
            torch.manual_seed(r.seed)
            model = build_model(cfg.model, NUM_CLASSES)
            torch.save(model.state_dict(), Path(tmp) / "model.pt")
            mlflow.log_artifact(str(Path(tmp) / "model.pt"))
            if not r.measured:
                return
            try:
                splits, which = load_splits(cfg.data), measures.MEASURES
            except FTNError:  # data the test does not have (a real dataset's name)
                splits, which = None, (measures.EFFICIENCY,)
            measures.log_measures(
                MlflowClient(),
                mlflow.active_run().info.run_id,
                model,
                cfg,
                splits,
                "a test machine",
                which,
            )
