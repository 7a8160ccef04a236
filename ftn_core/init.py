"""Where a run's backbone (S-Enc) starts: ``model.init``.

``scratch`` (random, keyed by the run's seed), ``imagenet`` (torchvision's weights, read from
torch's hub cache; nothing is downloaded), the name of a backbone shipped in
``ftn_core/weights/<name>.pt``, a file path, or an MLflow run id (``runs:/<id>`` or the bare
32-hex id: the weights artifact of a ``python ablations/pretrain.py`` run). Run ids are
resolved by ``ablations`` (it reads the MLflow store and fetches the file into
``<cache>/init/<id>.pt``); this module only finds that copy, so ``ftn_core`` never imports MLflow.

A weights file is a state dict in torchvision's ResNet names (``conv1.*``, ``bn1.*``,
``layer1.*`` … ``layer4.*``; ``fc.*`` is ignored), optionally with ``local_block.*`` (the
local branch's extra block). fp16 tensors are allowed and upcast to the model's dtype.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ftn_core.errors import FTNError

SHIPPED = Path(__file__).with_name("weights")
"""Backbones shipped with the package: ``model.init=<name>`` reads ``SHIPPED/<name>.pt``."""
RUN_ID = re.compile(r"(?:runs:/)?([0-9a-f]{32})(?:/backbone\.pt)?/?")
DIGEST_CHARS = 16
IMAGENET_WEIGHTS = {
    "resnet10": None,  # no ImageNet weights: for from-scratch CPU presets only
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
}
# S-Enc's stages (ftn_core/backbone.py) under torchvision's names, as weights files hold them.
STAGE_NAMES = {
    "stage1.0.": "conv1.",
    "stage1.1.": "bn1.",
    "stage2.": "layer1.",
    "stage3.": "layer2.",
    "stage4.": "layer3.",
    "stage5.": "layer4.",
    "local_block.": "local_block.",
}


@dataclass(frozen=True)
class InitSource:
    """A resolved ``model.init``: the file to load and how the user named it (for messages)."""

    path: Path
    label: str


def run_id(spec: str) -> str | None:
    """The MLflow run id ``spec`` names (``runs:/<id>``, ``runs:/<id>/backbone.pt`` or the
    bare id), else None."""
    m = RUN_ID.fullmatch(spec.strip())
    return m.group(1) if m else None


def run_cache_path(rid: str) -> Path:
    """Where ``ablations`` puts the weights of the MLflow run ``rid``."""
    from ftn_core.data.digest import cache_dir

    return cache_dir() / "init" / f"{rid}.pt"


def imagenet_file(arch: str, option: str = "model.init=imagenet") -> Path:
    """torchvision's ImageNet weights file for ``arch`` in torch's hub cache; one line saying
    how to put it there when it is missing (nothing is downloaded)."""
    if arch not in IMAGENET_WEIGHTS:
        raise FTNError(f"model.backbone={arch}: unknown; one of {', '.join(IMAGENET_WEIGHTS)}")
    if IMAGENET_WEIGHTS[arch] is None:
        raise FTNError(
            f"model.backbone={arch} has no ImageNet weights: set model.pretrained=false "
            f"and model.init=scratch, or use resnet18, resnet34 or resnet50"
        )
    import torchvision

    weights = torchvision.models.get_weight(IMAGENET_WEIGHTS[arch])
    name = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not cached.is_file():
        raise FTNError(
            f"{option}: torchvision's {arch} weights are not in {cached} (nothing is "
            f"downloaded); fetch {weights.url} there, or pass "
            f"--set model.weights_path=/path/to/{name}"
        )
    return cached


def resolve(
    spec: str, arch: str, pretrained: bool = False, weights_path: str = ""
) -> InitSource | None:
    """The file ``model.init=spec`` names (with the older ``model.pretrained`` /
    ``model.weights_path``, which mean ``imagenet``), or None for a random start. Every
    unusable value is one line."""
    spec = spec.strip()
    if spec not in ("scratch", "imagenet") and (pretrained or weights_path):
        which = "model.pretrained=true" if pretrained else f"model.weights_path={weights_path}"
        raise FTNError(
            f"model.init={spec} and {which} both say where the backbone starts; "
            f"keep one (set model.pretrained=false and model.weights_path=)"
        )
    if weights_path:  # a local copy of the ImageNet weights
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FTNError(
                f"model.weights_path={weights_path}: no such file; give the path of a "
                f"torchvision {arch} state dict (.pth)"
            )
        return InitSource(path, f"model.weights_path={weights_path}")
    if spec == "imagenet" or pretrained:
        option = "model.init=imagenet" if spec == "imagenet" else "model.pretrained=true"
        return InitSource(imagenet_file(arch, option), option)
    if spec == "scratch":
        return None
    if not spec:
        raise FTNError(
            "model.init is empty; give scratch, imagenet, a shipped name, a file or an "
            "MLflow run id"
        )
    rid = run_id(spec)
    if rid is not None:
        path = run_cache_path(rid)
        if not path.is_file():
            raise FTNError(
                f"model.init={spec}: an MLflow run's weights, not fetched yet; "
                f"ablations/run.py fetches them from its --tracking-uri (or give the "
                f"weights file itself)"
            )
        return InitSource(path, f"model.init={spec}")
    path = Path(spec).expanduser()
    if path.is_file():
        return InitSource(path, f"model.init={spec}")
    if os.sep in spec or "/" in spec or path.suffix in (".pt", ".pth"):
        raise FTNError(
            f"model.init={spec}: no such file; give a weights file written by "
            f"ablations/pretrain.py (its backbone.pt) or a torchvision state dict"
        )
    shipped = SHIPPED / f"{spec}.pt"
    if shipped.is_file():
        return InitSource(shipped, f"model.init={spec}")
    names = sorted(p.stem for p in SHIPPED.glob("*.pt"))
    raise FTNError(
        f"model.init={spec}: not scratch, imagenet, a file, an MLflow run id or a "
        f"shipped backbone (shipped: {', '.join(names) or 'none'})"
    )


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes, shortened: a run's ``init_digest``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:DIGEST_CHARS]


def init_digest(spec: str, arch: str, pretrained: bool = False, weights_path: str = "") -> str:
    """The digest of the weights ``model.init`` names ("" for scratch): with the config hash and
    the data digest, part of a run's identity, so a changed weights file is a new run."""
    source = resolve(spec, arch, pretrained, weights_path)
    return "" if source is None else file_digest(source.path)


def read_weights(source: InitSource) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in the file and the digest of the bytes it was read from (one read)."""
    try:
        data = source.path.read_bytes()
    except OSError as err:
        raise FTNError(f"{source.label}: cannot read {source.path} ({err.strerror})") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise FTNError(
            f"{source.label}: not a readable state dict ({type(err).__name__}); give "
            f"a backbone.pt from ablations/pretrain.py or a torchvision .pth"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FTNError(
            f"{source.label}: not a state dict of tensors; give a backbone.pt from "
            f"ablations/pretrain.py or a torchvision .pth"
        )
    return state, hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def load_into(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    label: str,
    prefix: str = "",
    skip: tuple[str, ...] = (),
) -> None:
    """Copy ``state[prefix + name]`` into every parameter and buffer of ``module`` whose name
    does not start with one of ``skip``, exactly (an fp16 file is upcast to the module's dtype).
    Strict: a missing key, an unexpected key under ``prefix`` (other than ``skip``) or a shape
    that differs is one line naming it."""
    own = {k: v for k, v in module.state_dict(keep_vars=True).items() if not k.startswith(skip)}
    for name, target in own.items():
        key = prefix + name
        if key not in state:
            raise FTNError(
                f"{label}: the file has no {key}; it is not a backbone of this "
                f"model.backbone (or it is another file)"
            )
        value = state[key]
        if tuple(value.shape) != tuple(target.shape):
            raise FTNError(
                f"{label}: {key} has shape {tuple(value.shape)} in the file but "
                f"{tuple(target.shape)} in the model; is it another model.backbone?"
            )
        if value.is_floating_point() != target.is_floating_point():
            raise FTNError(
                f"{label}: {key} is {value.dtype} in the file but {target.dtype} in the model"
            )
    extra = [
        k
        for k in state
        if k.startswith(prefix)
        and k[len(prefix) :] not in own
        and not k[len(prefix) :].startswith(skip)
    ]
    if extra:
        raise FTNError(
            f"{label}: the file has {extra[0]}, which this model.backbone has not "
            f"({len(extra)} such key(s)); is it another model.backbone?"
        )
    with torch.no_grad():
        for name, target in own.items():
            target.copy_(state[prefix + name])


def backbone_state(senc: nn.Module, local_block: bool = True) -> dict[str, torch.Tensor]:
    """S-Enc's weights under torchvision's names (the weights-file format), with the local
    branch's block when ``local_block``; detached CPU copies."""
    out = {}
    for name, value in senc.state_dict().items():
        for ours, theirs in STAGE_NAMES.items():
            if name.startswith(ours):
                if theirs != "local_block." or local_block:
                    out[theirs + name[len(ours) :]] = value.detach().cpu().clone()
                break
    return out
