"""Presets: named overrides of ``Config`` (DESIGN §3: presets scale epochs and milestones).

- ``paper``: the paper's setting (ResNet-50, 256×128, ImageNet weights, 360 epochs, 8×4).
- ``cpu``: the embedded synthetic data on a 2-core CPU; the whole of Table 2 in ≤ 15 min.
- ``tiny``: seconds; for tests.
"""

from __future__ import annotations

from typing import Any

from ftn_core.config import Config, override
from ftn_core.errors import FTNError

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "model.backbone": "resnet50", "model.pretrained": True, "model.decoder_width": 64,
        "data.height": 256, "data.width": 128, "data.num_ids": 8, "data.num_instances": 4,
        "data.workers": 4,
        "train.epochs": 360, "train.warmup_epochs": 51, "train.milestones": (150, 240, 300),
        "train.eval_every": 40,
    },
    "cpu": {
        "model.backbone": "resnet18", "model.pretrained": False, "model.decoder_width": 16,
        "model.embed_dim": 256,
        "data.dataset": "synthetic", "data.synthetic_size": "default",
        "data.height": 64, "data.width": 32, "data.num_ids": 8, "data.num_instances": 4,
        "data.pad": 4, "data.workers": 0,
        # The paper's 360 epochs (warm-up 51, milestones 150/240/300) scaled by 1/45, so that
        # the whole of Table 2 (8 variants) trains in about 12 minutes on a 2-core CPU.
        "train.epochs": 8, "train.warmup_epochs": 1, "train.milestones": (3, 5, 7),
        "train.lr": 3.5e-4, "train.eval_every": 4,
    },
    "tiny": {
        "model.backbone": "resnet18", "model.pretrained": False, "model.decoder_width": 4,
        "model.embed_dim": 16,
        "data.dataset": "synthetic", "data.synthetic_size": "tiny",
        "data.height": 32, "data.width": 16, "data.num_ids": 4, "data.num_instances": 2,
        "data.pad": 2, "data.workers": 0,
        "train.epochs": 2, "train.warmup_epochs": 1, "train.milestones": (1,),
        "train.eval_every": 1, "train.max_batches": 3,
    },
}


def preset_config(name: str, overrides: dict[str, Any] | None = None) -> Config:
    """``Config()`` with the preset, then the user's ``--set`` overrides, applied."""
    if name not in PRESETS:
        raise FTNError(f"--preset {name}: unknown; one of {', '.join(PRESETS)}")
    return override(override(Config(), PRESETS[name]), overrides or {})
