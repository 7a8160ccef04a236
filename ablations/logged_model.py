"""The LoggedModel a training run logs: the pyfunc of ``ablations/served_model.py`` (models from
code: nothing is pickled), its signature and input example; and the quiet MLflow calls that
``ablations.models`` shares. Kept apart from ``ablations.models``, which reads the store through
``ablations.store``: ``ablations.tracking`` logs through this module, and no import goes round in a
loop.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from ftn_core.config import from_dict
from ftn_core.embedder import CONFIG_NAME

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "model"
"""The name of a run's LoggedModel (``runs:/<run>/model``)."""
WEIGHTS_NAME = "model.pt"
SERVED_CODE = REPO / "ablations" / "served_model.py"


@contextlib.contextmanager
def no_progress_bar() -> Iterator[None]:
    """No download progress bar from MLflow inside the block (the caller's setting after it)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """MLflow's and torch's log lines and warnings kept out of a one-line command's output, and
    the code path MLflow prepends to ``sys.path`` taken back out."""
    path = list(sys.path)
    loggers = [logging.getLogger(name) for name in ("mlflow", "torch")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.path[:] = path
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def served_signature(dim: int):
    """The LoggedModel's signature: rows of ``image`` (encoded bytes) or ``pixels`` ((H, W, 3)
    integers), param ``flip``; (N, ``dim``) float32 out. ``pixels`` is typed ``Any``: MLflow
    checks an ``Array`` column element by element in Python (far too slow for images),
    and the model checks the array's shape and range itself."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import (
        AnyType,
        ColSpec,
        DataType,
        ParamSchema,
        ParamSpec,
        Schema,
        TensorSpec,
    )

    inputs = Schema(
        [
            ColSpec(DataType.binary, "image", required=False),
            ColSpec(AnyType(), "pixels", required=False),
        ]
    )
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, dim))])
    return ModelSignature(
        inputs=inputs,
        outputs=outputs,
        params=ParamSchema([ParamSpec("flip", DataType.boolean, False)]),
    )


def log_served_model(state: dict, example: str | Path | None, params: dict[str, str]) -> str:
    """Log the run's model as the pyfunc of ``ablations/served_model.py`` (models from code,
    so nothing is pickled), named ``model``, on the active run: ``state`` (the state dict) and
    the run's config.json (logged before) are its artifacts, ``ftn_core`` its code, ``example``
    (an image file) its input example. Returns the LoggedModel's id."""
    import mlflow
    import pandas as pd
    import PIL
    import torch
    import torchvision

    run_id = mlflow.active_run().info.run_id
    with tempfile.TemporaryDirectory() as tmp, no_progress_bar():
        config = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=CONFIG_NAME, dst_path=tmp
                )
            ).read_text()
        )
    cfg = from_dict(config)
    dim = sum(
        int(v.shape[1])
        for k, v in state.items()
        if k.startswith("heads.") and k.endswith(".classifier.weight")
    )  # branches × d
    requirements = [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"torchvision=={torchvision.__version__.split('+')[0]}",
        f"pandas=={pd.__version__}",
        f"pillow=={PIL.__version__}",
    ]
    metadata = {
        "ftn_embedding": {
            "height": cfg.data.height,
            "width": cfg.data.width,
            "dim": dim,
            "preprocessing": "RGB, resized to height x width (bilinear, "
            "antialiased), scaled to [0, 1], ImageNet mean/std",
            "output": "L2-normalised embeddings",
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        weights, config_path = Path(tmp) / WEIGHTS_NAME, Path(tmp) / CONFIG_NAME
        torch.save(state, weights)
        config_path.write_text(json.dumps(config, indent=2, default=list))
        example_df = (
            pd.DataFrame({"image": [Path(example).read_bytes()]}) if example is not None else None
        )
        with quiet():
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(SERVED_CODE),
                artifacts={"weights": str(weights), "config": str(config_path)},
                code_paths=[str(REPO / "ftn_core")],
                signature=served_signature(dim),
                input_example=example_df,
                pip_requirements=requirements,
                metadata=metadata,
                params=params,
            )
    return info.model_id
