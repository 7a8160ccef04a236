"""A run's trained model out of the store: ``load_embedder(ref)``, and the LoggedModel a run logs.

    from ablations.models import load_embedder
    emb = load_embedder("3f2a…")                 # a run id, a LoggedModel id or a checkpoint
    out = emb.embed("photos/")                   # ftn_core.embedder.Embeddings: names, vectors

``ref`` is one of
- a run id (32 hex digits, or ``runs:/<id>``): its ``model.pt`` with its ``config.json``; else
  its LoggedModel; else, for a run still training, its resumable checkpoint in the store's
  checkpoint folder (the config then comes from the run's params);
- a LoggedModel id (``m-<32 hex>``, or ``models:/m-…``): the pyfunc this suite logs now, or the
  pytorch-flavour model of runs from before it (torch's pickle: load only models you trust);
- a file: a ``model.pt`` with the run's ``config.json`` beside it, or the runner's checkpoint
  ``<name>-<run id>.pt`` (its config from the run); a folder holding either, or an MLflow model
  folder (its ``MLmodel`` file).
The pure part (no MLflow) is ``ftn_core.embedder.Embedder``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from ablations.logged_model import MODEL_NAME, WEIGHTS_NAME, no_progress_bar, quiet
from ftn_core.config import Config, from_dict, override
from ftn_core.data.loading import EVAL_BATCH
from ftn_core.embedder import CONFIG_NAME, Embedder, read_config
from ftn_core.errors import FTNError

RUN_REF = re.compile(r"(?:runs:/)?([0-9a-f]{32})(?:/[\w.-]*)?/?")
MODEL_REF = re.compile(r"(?:models:/)?(m-[0-9a-f]{32})/?")
CHECKPOINT_NAME = re.compile(r".+-([0-9a-f]{32})\.pt")
"""The runner's resumable checkpoint: ``<run name>-<run id>.pt``."""


def load_embedder(
    ref: str | Path,
    tracking_uri: str | None = None,
    device: Any = "auto",
    batch_size: int = EVAL_BATCH,
    flip: bool = False,
) -> Embedder:
    """The ``Embedder`` of a run, a LoggedModel or a checkpoint (module docstring); every
    failure is one ``FTNError``."""
    options = {"device": device, "batch_size": batch_size, "flip": flip}
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists():
        return _from_path(path, tracking_uri, options)
    if match := MODEL_REF.fullmatch(text):
        client = _client(tracking_uri, f"LoggedModel {match[1]}")
        return _from_logged_model(client, match[1], None, options)
    if match := RUN_REF.fullmatch(text):
        client = _client(tracking_uri, f"run {match[1]}")
        return _from_run(client, match[1], options)
    raise FTNError(
        f"{text}: no such file, and not an MLflow run id (32 hex digits) or "
        f"LoggedModel id (m-<32 hex digits>); copy one from the MLflow UI"
    )


# --------------------------------------------------------------------------- the store


def _client(uri: str | None, what: str):
    from ablations import store

    client = store.open_store(uri, create=False)
    if client is None:
        raise FTNError(
            f"{what}: the store {uri or store.DEFAULT_TRACKING_URI} does not exist; "
            f"pass the --tracking-uri that holds it"
        )
    return client


def _download(client, run_id: str, name: str, dst: str) -> str | None:
    """The local path of the run's artifact ``name``, or None when the run has none."""
    import mlflow

    if name not in {f.path for f in client.list_artifacts(run_id)}:
        return None
    with no_progress_bar():
        return mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=name, dst_path=dst, tracking_uri=client.tracking_uri
        )


def run_config(client, run) -> Config:
    """The run's resolved config: its ``config.json`` (logged when it finished), else its params
    (logged when it started)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _download(client, run.info.run_id, CONFIG_NAME, tmp)
        if path is not None:
            return read_config(path)
    params = dict(run.data.params)
    if "data.height" not in params:
        raise FTNError(
            f"run {run.info.run_id}: neither a {CONFIG_NAME} nor the params of a "
            f"training run of this suite; give a training run's id"
        )
    try:
        return override(from_dict({}), params)
    except FTNError as err:
        raise FTNError(
            f"run {run.info.run_id}: its params are not a config of this code ({err})"
        ) from None


def _get_run(client, run_id: str):
    try:
        return client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises its own for an unknown id
        raise FTNError(
            f"run {run_id}: no such run in {client.tracking_uri}; copy a run id from "
            f"the MLflow UI or `mlflow runs list`"
        ) from None


def _from_run(client, run_id: str, options: dict[str, Any]) -> Embedder:
    run = _get_run(client, run_id)
    cfg = run_config(client, run)
    embedder = _run_weights(client, run, cfg, options)
    embedder.source = f"run {run_id} ({run.info.run_name})"
    return embedder


def _run_weights(client, run, cfg: Config, options: dict[str, Any]) -> Embedder:
    """The run's model.pt, else its LoggedModel, else its resumable checkpoint."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        weights = _download(client, run_id, WEIGHTS_NAME, tmp)
        if weights is not None:
            return Embedder.from_checkpoint(weights, cfg, **options)
    model_id = run_model_id(client, run)
    if model_id is not None:
        return _from_logged_model(client, model_id, cfg, options)
    ckpt = _checkpoint_of(client, run)
    if ckpt is not None:
        return Embedder.from_checkpoint(ckpt, cfg, **options)
    raise FTNError(
        f"run {run_id} ({run.info.run_name}, {run.info.status}) has no saved model: no "
        f"{WEIGHTS_NAME}, no LoggedModel and no checkpoint in the store's checkpoint "
        f"folder; give a FINISHED training run, or the checkpoint file itself"
    )


def run_model_id(client, run) -> str | None:
    """The id of the run's LoggedModel named ``model`` (None for a run from before them)."""
    try:
        outputs = list(run.outputs.model_outputs or [])
    except AttributeError:  # an MLflow without LoggedModels
        return None
    for output in outputs:
        try:
            if client.get_logged_model(output.model_id).name == MODEL_NAME:
                return output.model_id
        except Exception:  # noqa: BLE001 - a model deleted since
            continue
    return None


def _checkpoint_of(client, run) -> Path | None:
    from ablations import store

    exp = client.get_experiment(run.info.experiment_id)
    name = f"{run.info.run_name}-{run.info.run_id}.pt"
    path = store.checkpoint_dir(client.tracking_uri) / exp.name / name
    return path if path.is_file() else None


def _from_logged_model(
    client, model_id: str, cfg: Config | None, options: dict[str, Any]
) -> Embedder:
    import mlflow

    try:
        logged = client.get_logged_model(model_id)
    except Exception:  # noqa: BLE001 - MLflow raises its own for an unknown id
        raise FTNError(
            f"LoggedModel {model_id}: no such model in {client.tracking_uri}; copy its "
            f"id from the run's Logged models in the MLflow UI"
        ) from None
    if cfg is None and logged.source_run_id:
        cfg = run_config(client, _get_run(client, logged.source_run_id))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with no_progress_bar():
                folder = mlflow.artifacts.download_artifacts(
                    artifact_uri=logged.artifact_location, dst_path=tmp
                )
        except Exception as err:  # noqa: BLE001 - files gone from the artifact store
            raise FTNError(
                f"LoggedModel {model_id}: its files cannot be read "
                f"({str(err).splitlines()[0][:120]})"
            ) from None
        return _from_model_dir(Path(folder), cfg, f"LoggedModel {model_id}", options)


def _from_model_dir(
    folder: Path, cfg: Config | None, what: str, options: dict[str, Any]
) -> Embedder:
    """An MLflow model folder: this suite's pyfunc (weights and config among its artifacts) or
    an earlier run's pytorch flavour (``cfg`` gives its input size)."""
    from mlflow.models import Model

    try:
        flavors = Model.load(str(folder / "MLmodel")).flavors
    except Exception as err:  # noqa: BLE001 - no MLmodel, or not YAML
        raise FTNError(f"{what}: not an MLflow model ({str(err).splitlines()[0][:100]})") from None
    artifacts = flavors.get("python_function", {}).get("artifacts") or {}
    if "weights" in artifacts and "config" in artifacts:
        return _embedder_from_files(
            folder / artifacts["weights"]["path"],
            folder / artifacts["config"]["path"],
            what,
            options,
        )
    if "pytorch" in flavors:
        if cfg is None:
            raise FTNError(
                f"{what}: a pytorch-flavour model without its run's config; load it by "
                f"the run id instead"
            )
        net = _load_pytorch(folder)
        from ftn_core.model import FTN

        if not isinstance(net, FTN):
            raise FTNError(f"{what}: a {type(net).__name__}, not an FTN model of this suite")
        return Embedder(net, cfg.data.height, cfg.data.width, source=what, config=cfg, **options)
    raise FTNError(
        f"{what}: not an embedding model of this suite (flavours: {', '.join(flavors) or 'none'})"
    )


def _embedder_from_files(
    weights: Path, config: Path, what: str, options: dict[str, Any]
) -> Embedder:
    from ftn_core.embedder import read_state

    return Embedder.from_state(
        read_config(config, weights), read_state(weights), source=what, **options
    )


def _load_pytorch(folder: Path):
    import mlflow.pytorch

    try:
        with quiet():
            return mlflow.pytorch.load_model(str(folder), map_location="cpu").eval()
    except Exception as err:  # noqa: BLE001 - unpicklable: another code version
        raise FTNError(
            f"{folder}: its pytorch model cannot be loaded by this code "
            f"({str(err).splitlines()[0][:120]}); load the run's {WEIGHTS_NAME} by "
            f"run id"
        ) from None


def logged_net(client, run_id: str):
    """The FTN network of the run's LoggedModel (either flavour), in eval mode on the CPU, or
    None for a run without one or whose LoggedModel cannot be read (``evaluate.py`` then falls
    back to model.pt). Nothing is left in the temporary folder or in ``sys.path``."""
    try:
        run = client.get_run(run_id)
        model_id = run_model_id(client, run)
        if model_id is None:
            return None
        with quiet():
            cfg = run_config(client, run)
            return _from_logged_model(client, model_id, cfg, {"device": "cpu"}).model
    except Exception:  # noqa: BLE001 - unreadable or of another code version: the caller falls back
        return None


def _from_path(path: Path, tracking_uri: str | None, options: dict[str, Any]) -> Embedder:
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return _from_model_dir(path, None, str(path), options)
        if (path / WEIGHTS_NAME).is_file():
            return Embedder.from_checkpoint(path / WEIGHTS_NAME, **options)
        raise FTNError(
            f"{path}: a folder without {WEIGHTS_NAME} or MLmodel; give a checkpoint "
            f"file, a run id or a LoggedModel id"
        )
    if (path.parent / CONFIG_NAME).is_file():
        return Embedder.from_checkpoint(path, **options)
    if match := CHECKPOINT_NAME.fullmatch(path.name):
        client = _client(tracking_uri, f"checkpoint {path} (run {match[1]})")
        cfg = run_config(client, _get_run(client, match[1]))
        return Embedder.from_checkpoint(path, cfg, **options)
    return Embedder.from_checkpoint(path, **options)  # says that no config.json is beside it
