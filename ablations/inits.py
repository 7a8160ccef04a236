"""``model.init`` for the runner: each planned run's init digest, found before any store or run
is created, and an MLflow run id's weights fetched from the store (``ftn_core`` reads no MLflow).

A pre-training run (``ablations/pretrain.py``) logs its backbone as the artifact ``backbone.pt``
with the tag ``backbone_digest``; ``model.init=runs:/<id>`` (or the bare id) copies that file
into ``<cache>/init/<id>.pt`` (``ftn_core.init.run_cache_path``), where the model finds it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from ftn_core.backbone import SEnc
from ftn_core.errors import FTNError
from ftn_core.init import file_digest, resolve, run_cache_path, run_id

ARTIFACT = "backbone.pt"
"""The weights artifact of a pre-training run."""


def fetch_run_weights(spec: str, uri: str, dest: Path | None = None) -> Path:
    """The weights of the pre-training run ``spec`` names (``runs:/<id>`` or the id), copied
    from the store at ``uri`` to ``dest`` (default: the cache ``ftn_core`` reads; an existing
    copy there is used as it is). Refuses, in one line, a store or run that does not exist, a
    run that is not FINISHED, has no ``backbone.pt`` or whose file does not match its digest."""
    from ablations import store

    rid = run_id(spec)
    target = dest or run_cache_path(rid)
    if dest is None and target.is_file():
        return target
    import mlflow
    from mlflow.exceptions import MlflowException

    client = store.open_store(uri, create=False)
    if client is None:
        raise FTNError(
            f"model.init={spec}: the tracking store {uri} does not exist; pass the "
            f"--tracking-uri of the store that holds the pre-training run"
        )
    try:
        run = client.get_run(rid)
    except MlflowException:
        raise FTNError(
            f"model.init={spec}: no such run in {uri}; pass the --tracking-uri of the "
            f"store that holds it, or give its weights file"
        ) from None
    if run.info.status != "FINISHED":
        raise FTNError(
            f"model.init={spec}: the run is {run.info.status}, not FINISHED; finish it "
            f"(run its pretrain.py command again) or give another run"
        )
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=rid, artifact_path=ARTIFACT, dst_path=tmp, tracking_uri=uri
                )
            )
        except (MlflowException, OSError):
            local = None
        if local is None or not local.is_file():
            raise FTNError(
                f"model.init={spec}: the run has no {ARTIFACT}; give the id of a "
                f"FINISHED ablations/pretrain.py run"
            ) from None
        want = run.data.tags.get("backbone_digest", "")
        if want and file_digest(local) != want:
            raise FTNError(
                f"model.init={spec}: its {ARTIFACT} does not match the run's "
                f"backbone_digest {want}; the artifact was changed, pre-train again"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            shutil.copyfile(local, part)
            os.replace(part, target)
        except BaseException:
            Path(part).unlink(missing_ok=True)
            raise
    return target


def fill_init_digests(plan: Iterable, uri: str, fetch: bool = True) -> None:
    """Give every planned run its ``init_digest`` ("" for scratch), after loading each distinct
    init once into its backbone: a missing file, an unknown run id or a shape that does not fit
    is one line here, before any store or run is created. ``fetch=False`` (``--dry-run``): an
    MLflow run's weights are read into a temporary folder, not the cache."""
    done: dict[tuple, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in plan:
            m = p.cfg.model
            key = (m.init, m.backbone, m.pretrained, m.weights_path, m.last_stride, m.stage4_stride)
            if key not in done:
                done[key] = _check(m, uri, None if fetch else Path(tmp) / f"{len(done)}.pt")
            p.init_digest = done[key]


def _check(m, uri: str, dest: Path | None) -> str:
    if run_id(m.init) is not None and not (m.pretrained or m.weights_path):
        path = fetch_run_weights(m.init, uri, dest)
    else:
        source = resolve(m.init, m.backbone, m.pretrained, m.weights_path)
        if source is None:
            return ""
        path = source.path
    with torch.random.fork_rng(devices=[]):  # the check draws a random backbone: not the caller's
        senc = SEnc(
            m.backbone, last_stride=m.last_stride, stage4_stride=m.stage4_stride, init=str(path)
        )
    return senc.init_digest
