"""What a report reads from a run's model, measured where the model is: ``efficiency.json``
(parameters, MACs, FLOPs, CPU latency, and CFA's and PAM-CAM's cost at the paper's setting,
with the machine that timed it) and ``figure_data.npz`` (``ftn_core.figure_data``: the arrays
the visual figures are drawn from). A run logs both when it finishes; ``ablations/per_query.py``
gives them to runs trained before they existed. Reports only read them, so a report never builds
a model and its latency column is what each run's machine measured.
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow.tracking import MlflowClient

from ablations.store import EFFICIENCY, FIGURE_DATA

if TYPE_CHECKING:  # torch is imported where a model is measured: reports read the names only
    from ftn_core.config import Config
    from ftn_core.data.types import DatasetSplits
    from ftn_core.model import FTN

MEASURES = (EFFICIENCY, FIGURE_DATA)
"""The artifacts of this module, in the order ``missing`` names them."""


def efficiency(model: FTN, cfg: Config, machine: str) -> dict[str, Any]:
    """``efficiency.json``'s content for a trained model (on the CPU, in eval mode)."""
    import torch

    from ftn_core.cost import attention_costs, variant_cost

    cost = variant_cost(model.cpu(), cfg.data.height, cfg.data.width)
    return {
        "backbone": cfg.model.backbone,
        "input": [cfg.data.height, cfg.data.width],
        **cost,
        "attention_costs": attention_costs(),
        "machine": machine,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def log_measures(
    client: MlflowClient,
    run_id: str,
    model: FTN,
    cfg: Config,
    splits: DatasetSplits,
    machine: str,
    which: tuple[str, ...] = MEASURES,
) -> None:
    """Log ``which`` of ``efficiency.json`` and ``figure_data.npz`` for ``model`` to the run.
    The model is left in eval mode on the CPU."""
    from ftn_core.figure_data import figure_arrays

    model = model.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        if EFFICIENCY in which:
            path = Path(tmp) / EFFICIENCY
            path.write_text(json.dumps(efficiency(model, cfg, machine), indent=1), encoding="utf-8")
            client.log_artifact(run_id, str(path))
        if FIGURE_DATA in which:
            path = Path(tmp) / FIGURE_DATA
            np.savez_compressed(path, **figure_arrays(model, cfg, splits))
            client.log_artifact(run_id, str(path))


def missing(files: set[str]) -> tuple[str, ...]:
    """Which of this module's artifacts a run with these artifact ``files`` lacks."""
    return tuple(name for name in MEASURES if name not in files)
