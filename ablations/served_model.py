"""The code of a run's LoggedModel (MLflow "models from code"): a pyfunc that embeds images.

``ablations.tracking.log_embedding_model`` logs this file with the run's weights (``model.pt``)
and ``config.json`` as the model's artifacts and the ``ftn_core`` package as its code; MLflow
runs the file when it loads the model (``mlflow.pyfunc.load_model``, ``mlflow models serve``),
so it imports only MLflow, numpy, pandas and ``ftn_core``.

Input: a DataFrame, one row per image, with either ``image`` (the encoded file: JPEG or PNG
bytes; base64 in JSON) or ``pixels`` (the RGB image at its original size, (H, W, 3) integers in
0–255; nested lists in JSON). The model preprocesses as the evaluation does
(``ftn_core.embedder``). Param ``flip`` (default false): average with the mirror image's.
Output: (N, D) float32 embeddings of unit L2 norm, in the rows' order.
"""

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from ftn_core.embedder import Embedder
from ftn_core.errors import FTNError


class EmbeddingModel(mlflow.pyfunc.PythonModel):
    """The run's ``Embedder`` behind MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        self.embedder = Embedder.from_checkpoint(
            context.artifacts["weights"], context.artifacts["config"], device="auto"
        )

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        rows = model_input.to_dict("records")
        images = []
        try:
            for i, row in enumerate(rows):
                images.append(_image(row, i))
            flip = bool((params or {}).get("flip", False))
            return self.embedder.embed(
                images, names=[f"row {i}" for i in range(len(images))], flip=flip
            ).vectors
        except FTNError as err:  # a bad image: the client's error (HTTP 400), in one line
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None


def _image(row: dict, i: int):
    """The row's encoded bytes or its pixels as a uint8 (H, W, 3) array."""
    encoded, pixels = row.get("image"), row.get("pixels")
    has_encoded = encoded is not None and not (isinstance(encoded, float) and np.isnan(encoded))
    has_pixels = pixels is not None and not (isinstance(pixels, float) and np.isnan(pixels))
    if has_encoded == has_pixels:
        raise FTNError(
            f"row {i}: give exactly one of 'image' (encoded bytes) or 'pixels' (an (H, W, 3) array)"
        )
    if has_encoded:
        return bytes(encoded)
    array = np.asarray(pixels)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype.kind not in "iu":
        raise FTNError(
            f"row {i}: 'pixels' must be (H, W, 3) integers, got {array.dtype} {array.shape}"
        )
    if array.size and (array.min() < 0 or array.max() > 255):
        raise FTNError(f"row {i}: 'pixels' must lie in 0–255")
    return array.astype(np.uint8)


mlflow.models.set_model(EmbeddingModel())
