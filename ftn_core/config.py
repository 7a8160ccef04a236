"""Run configuration: frozen dataclasses nested by concern (model, loss, data, train).

Only the top of the program reads a ``Config``; modules take plain keyword arguments.
Variants are ``dataclasses.replace`` of a base, ``override`` serves ``--set``, presets and
Optuna alike, and ``flatten`` gives the dotted names logged as MLflow params.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from ftn_core.errors import FTNError

Backbone = Literal["resnet10", "resnet18", "resnet34", "resnet50"]
Attention = Literal["none", "cfa", "pamcam"]
# Reconstruction target of TF-Dec (paper Table 2): the input weighted by the product of
# these masks. "input" = no mask (row b); gm = Gaussian; pam / cam = CFA attention masks.
# "oracle" (a control, synthetic data only): the input times the ground-truth person mask.
MaskStrategy = Literal["input", "gm", "gm_pam", "gm_cam", "gm_pam_cam", "oracle"]
# Where the attention module sits: "series" = stage 5 consumes A′ (the paper's
# reading), "residual" = stage 5 consumes A + A′ with A′ = 0 at initialisation, "parallel" =
# a side branch (stage 5 consumes A).
Placement = Literal["series", "residual", "parallel"]
Schedule = Literal["alternate", "joint"]
LrDecay = Literal["step", "cosine"]
Reduction = Literal["paper", "mean"]
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]


@dataclass(frozen=True)
class ModelConfig:
    """The network (paper §3.1–3.2). Every Table 1/2 variant is one of these."""

    backbone: Backbone = "resnet50"
    pretrained: bool = False
    """Load torchvision's ImageNet weights from torch's hub cache (= ``init=imagenet``)."""
    weights_path: str = ""
    """A local ``.pth`` state dict of the torchvision backbone; used instead of the cache."""
    init: str = "scratch"
    """Where S-Enc starts (``ftn_core/init.py``): scratch | imagenet (= ``pretrained``) | a
    shipped backbone's name | a weights file | an MLflow run id (``runs:/<id>``). CFA, TF-Dec and
    the heads start from the seed whatever it is."""
    attention: Attention = "cfa"
    cfa_placement: Placement = "parallel"
    """How the attention output joins the backbone: series | residual | parallel
    (chosen by measurement, docs/reproduction.md, "Departures"). Applies to PAM-CAM too."""
    use_pa: bool = True
    use_ca: bool = True
    use_cmp: bool = True
    decoder: bool = True
    """TF-Dec on (training only; never runs at inference)."""
    decoder_width: int = 64
    """Channels of TF-Dec's head and body; 64 in the paper, 16/32 in CPU presets."""
    mask: MaskStrategy = "gm_pam_cam"
    gradient_loss: bool = True
    """Table 2 row (f) turns the gradient loss off; the L1 term stays."""
    gauss_sy: float = 0.5
    """Gaussian mask σ_y as a fraction of the image height (the paper gives no σ)."""
    gauss_sx: float = 0.35
    """Gaussian mask σ_x as a fraction of the image width."""
    embed_dim: int = 512
    last_stride: int = 1
    """Stride of stage 5 (1 in the paper: stage 5 keeps stage 4's resolution)."""
    stage4_stride: int = 2
    """Stride of stage 4 (2 in the paper); 1 doubles the stage-4 map CFA and TF-Dec see."""


@dataclass(frozen=True)
class LossConfig:
    """λ weights of Eq. 6 for the two batch kinds of the alternating scheme (paper §3.4)."""

    w_ce: float = 1.0
    w_triplet: float = 0.1
    w_grad: float = 1.0
    w_l1: float = 1.0
    margin: float = 0.3
    label_smooth: float = 0.0
    recon_reduction: Reduction = "paper"
    """paper: the gradient and L1 terms are summed over each image's elements and averaged
    over the batch (Eq. 2 as printed; L1's normalisation is not given, we use the same);
    mean: averaged over elements too (÷ C·H·W)."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"
    """synthetic | market1501 | dukemtmcreid | cuhk03_labeled | cuhk03_detected | msmt17"""
    root: str = "data"
    synthetic_size: str = "default"
    """Size of the generated benchmark: tiny | default | large."""
    synthetic_seed: int = 0
    synthetic_test_ids: int = 0
    """Test identities of the synthetic benchmark (0: the size's own, 100 for default); more
    grow the query and gallery while the training split stays byte-identical."""
    height: int = 256
    width: int = 128
    num_ids: int = 8
    """P of the PK sampler (identities per batch)."""
    num_instances: int = 4
    """K of the PK sampler (images per identity)."""
    workers: int = 0
    skip_bad_images: bool = False
    flip: float = 0.5
    pad: int = 10
    random_patch: float = 0.5
    random_erasing: float = 0.5


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 360
    warmup_epochs: int = 51
    """Backbone frozen; only heads, classifiers and attention train (paper §4.1)."""
    lr: float = 3.5e-4
    lr_warmup_epochs: int = 0
    """Linear lr warm-up from lr/warm-up-iterations to lr over these epochs (per batch); 0 in
    the paper, whose warm-up freezes the backbone instead (``warmup_epochs``)."""
    milestones: tuple[int, ...] = (150, 240, 300)
    """Epochs at which ``lr_decay=step`` multiplies the lr by 0.1 (unused by ``cosine``)."""
    lr_decay: LrDecay = "step"
    """After the warm-up: ``step`` (×0.1 at each milestone, the paper's) or ``cosine`` (half a
    cosine from lr down to 0 at the last batch, per batch)."""
    weight_decay: float = 5e-4
    schedule: Schedule = "alternate"
    matched_updates: bool = False
    """A model without TF-Dec skips the batches a TF-Dec variant spends on reconstruction, so
    it gets exactly the Re-ID updates of one (the ``base_matched`` control)."""
    eval_every: int = 40
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    """Mixed precision for the training steps: bf16 autocast on a GPU (fp16 with a scaler where
    bf16 is missing) and on a CPU that computes bf16 natively (AVX-512 BF16, AMX); fp32 on other
    CPUs. Weights, optimizer and evaluation stay fp32 (``engine.mixed_precision``)."""
    channels_last: bool = True
    compile: CompileMode = "off"
    """``torch.compile`` the training model with this mode (``reduce-overhead`` adds CUDA
    graphs); off until measured on a GPU. How a run executes, not what it computes: not part of
    the run's config hash."""
    max_batches: int = 0
    """Cap on batches per epoch (0 = a full pass); the tiny preset uses it."""


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.backbone": "resnet50", ...}`` for every leaf field, in declaration order."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` (often a string from the command line) to the field's type."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise FTNError(f"--set {key}={value}: must be one of {', '.join(map(str, choices))}")
        return value
    if origin in (tuple,):
        if isinstance(value, str):
            parts = [p for p in value.replace("(", "").replace(")", "").split(",") if p.strip()]
        else:
            parts = list(value)
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise FTNError(f"--set {key}={value}: expected comma-separated integers") from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise FTNError(f"--set {key}={value}: expected true or false")
    if hint in (int, float, str):
        try:
            converted = hint(value)
        except (TypeError, ValueError):
            raise FTNError(f"--set {key}={value}: expected {hint.__name__}") from None
        if hint is int and isinstance(value, float) and value != converted:
            raise FTNError(f"--set {key}={value}: expected an integer")
        return converted
    if isinstance(hint, types.UnionType):  # pragma: no cover - no union fields today
        return value
    return value


def override(cfg: Any, changes: dict[str, Any]) -> Any:
    """Return a copy of ``cfg`` with dotted keys replaced: ``override(c, {"loss.w_grad": 0})``.

    Unknown keys raise ``FTNError`` naming the key and the valid ones nearby.
    """
    for key, value in changes.items():
        cfg = _override_one(cfg, key.split("."), value, key)
    return cfg


def _override_one(node: Any, path: list[str], value: Any, key: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(node)}
    head = path[0]
    if head not in names:
        raise FTNError(f"--set {key}: unknown key '{head}' (valid here: {', '.join(names)})")
    current = getattr(node, head)
    if len(path) == 1:
        if dataclasses.is_dataclass(current):
            raise FTNError(f"--set {key}: '{head}' is a group; name one of its fields")
        hints = typing.get_type_hints(type(node))
        return dataclasses.replace(node, **{head: _coerce(value, hints[head], key)})
    if not dataclasses.is_dataclass(current):
        raise FTNError(f"--set {key}: '{head}' has no fields")
    return dataclasses.replace(node, **{head: _override_one(current, path[1:], value, key)})


def parse_sets(items: list[str]) -> dict[str, str]:
    """``["a.b=1", "c.d=x"]`` → ``{"a.b": "1", "c.d": "x"}``; malformed items raise."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise FTNError(f"--set {item}: expected key=value, e.g. --set train.epochs=10")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(d: dict[str, Any]) -> Config:
    """Inverse of ``to_dict`` (used to read a resolved config back from a run)."""
    return override(Config(), {k: v for k, v in flatten_dict(d).items()})


def flatten_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


HOW_IT_RUNS = ("train.device", "data.workers", "train.compile")
"""Settings that change where or how fast a run executes, not its result: left out of the hash."""


ADDED_FIELDS = {"train.lr_decay": "step", "data.synthetic_test_ids": 0, "model.init": "scratch"}
"""Fields added after runs were logged, with the value that does what the code did before
them: at that value they stay out of the hash, so earlier runs keep their hash (and are found
done, resumed and reported with the new ones)."""


COMPUTES = 2
"""Raised when the code starts computing something else for the same configuration, so that
runs of the older code are never taken for runs of this one: 2 = every random draw keyed by
the seed and its purpose (initial weights per module, augmentation per image and batch)."""


LOCATIONS = ("data.root", "model.init")
"""Where the data and the initial weights live: not part of a run's identity (the data digest
and the weights' digest, ``init_digest``, are), so a moved, copied or differently spelt folder
or weights file (a trailing slash, a relative path, a shipped copy) finds the same runs."""


def _normal(value: Any) -> Any:
    """A value as the hash sees it: −0.0 is 0.0 (``--set loss.w_grad=-0`` is the same run)."""
    if isinstance(value, float) and value == 0.0:
        return 0.0
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


def config_hash(cfg: Any, exclude: tuple[str, ...] = HOW_IT_RUNS + LOCATIONS) -> str:
    """A short stable hash of everything that changes the result (not where it runs, nor where
    its data lives), and of what the code computes from it (``COMPUTES``)."""
    flat = {
        k: _normal(v)
        for k, v in flatten(cfg).items()
        if k not in exclude and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])
    }
    if COMPUTES > 1:
        flat["computes"] = COMPUTES
    payload = json.dumps(flat, sort_keys=True, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def legacy_config_hash(cfg: Any) -> str:
    """The hash runs were tagged with before ``LOCATIONS`` left it (the data's folder in, −0.0
    kept): only to find those runs again, never to tag a new one."""
    flat = {
        k: v
        for k, v in flatten(cfg).items()  # model.init: its digest keys the run
        if k not in HOW_IT_RUNS + ("model.init",)
        and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])
    }
    if COMPUTES > 1:
        flat["computes"] = COMPUTES
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=list).encode()).hexdigest()[:12]


def setting_hash(cfg: Any) -> str:
    """``config_hash`` without the seed and the data's location: the same for every seed of a
    row trained alike, so that a report never pools a row's runs from before and after its
    study file or its ``--set`` changed. How often a run evaluates on the way (the result is the
    last epoch's) and the memory layout (nothing off CUDA) do not make another setting."""
    return config_hash(
        cfg, HOW_IT_RUNS + LOCATIONS + ("train.seed", "train.eval_every", "train.channels_last")
    )


def _finite(lo: float, lo_open: bool = False, hi: float | None = None, hi_open: bool = False):
    def check(v: Any) -> bool:
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if v < lo or lo_open and v == lo:
            return False
        return hi is None or v < hi or not hi_open and v == hi

    return check


_AT_LEAST_1, _NON_NEG = _finite(1), _finite(0)
_PROB = _finite(0, hi=1)
RULES: dict[str, tuple[Any, str]] = {
    "model.decoder_width": (_AT_LEAST_1, "an integer ≥ 1"),
    "model.embed_dim": (_AT_LEAST_1, "an integer ≥ 1"),
    "model.last_stride": (lambda v: v in (1, 2), "1 or 2"),
    "model.stage4_stride": (lambda v: v in (1, 2), "1 or 2"),
    "model.gauss_sy": (_finite(0, lo_open=True), "a finite number > 0"),
    "model.gauss_sx": (_finite(0, lo_open=True), "a finite number > 0"),
    "loss.w_ce": (_NON_NEG, "a finite number ≥ 0"),
    "loss.w_triplet": (_NON_NEG, "a finite number ≥ 0"),
    "loss.w_grad": (_NON_NEG, "a finite number ≥ 0"),
    "loss.w_l1": (_NON_NEG, "a finite number ≥ 0"),
    "loss.margin": (_NON_NEG, "a finite number ≥ 0"),
    "loss.label_smooth": (_finite(0, hi=1, hi_open=True), "a number in [0, 1)"),
    "data.synthetic_size": (lambda v: v in ("tiny", "default", "large"), "tiny, default or large"),
    "data.synthetic_seed": (_NON_NEG, "an integer ≥ 0"),
    "data.synthetic_test_ids": (_NON_NEG, "an integer ≥ 0 (0: the size's own)"),
    "data.height": (_finite(16), "at least 16 pixels"),
    "data.width": (_finite(8), "at least 8 pixels"),
    "data.num_ids": (_finite(2), "at least 2 (the triplet loss needs negatives)"),
    "data.num_instances": (_finite(2), "at least 2 (the triplet loss needs positives)"),
    "data.workers": (_NON_NEG, "an integer ≥ 0"),
    "data.flip": (_PROB, "a probability in [0, 1]"),
    "data.pad": (_NON_NEG, "an integer ≥ 0"),
    "data.random_patch": (_PROB, "a probability in [0, 1]"),
    "data.random_erasing": (_PROB, "a probability in [0, 1]"),
    "train.epochs": (_AT_LEAST_1, "an integer ≥ 1"),
    "train.device": (
        lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None,
        "auto, cpu, mps, cuda or cuda:N",
    ),
    "train.warmup_epochs": (_NON_NEG, "an integer ≥ 0"),
    "train.lr": (_finite(0, lo_open=True), "a finite number > 0"),
    "train.lr_warmup_epochs": (_NON_NEG, "an integer ≥ 0"),
    "train.milestones": (
        lambda v: all(isinstance(m, int) and m >= 1 for m in v) and list(v) == sorted(set(v)),
        "increasing epochs ≥ 1, e.g. 6,8",
    ),
    "train.weight_decay": (_NON_NEG, "a finite number ≥ 0"),
    "train.eval_every": (_NON_NEG, "an integer ≥ 0 (0: only at the end)"),
    "train.seed": (_NON_NEG, "an integer ≥ 0"),
    "train.max_batches": (_NON_NEG, "an integer ≥ 0 (0: a full pass)"),
}
"""The range of every numeric field; ``validate`` checks a whole config against it."""


def validate(cfg: Config) -> None:
    """Raise ``FTNError`` (one line naming the key, its value and the range) for a value out of
    range, before any run is created."""
    flat = flatten(cfg)
    for key, (ok, what) in RULES.items():
        if not ok(flat[key]):
            raise FTNError(
                f"{key}={flat[key]}: must be {what} (from --set, --params-file or the preset)"
            )
