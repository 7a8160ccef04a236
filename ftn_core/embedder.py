"""Embeddings from a trained model: images in, L2-normalised vectors and names out.

    from ftn_core.embedder import Embedder
    emb = Embedder.from_checkpoint("model.pt")              # config.json beside it
    out = emb.embed("photos/")                              # out.names, out.vectors (N, D)

Preprocessing is the evaluation's (``ftn_core.data.loading``): the image decoded as RGB uint8,
resized to the run's ``data.height`` × ``data.width`` (bilinear, antialiased, on uint8), scaled
to [0, 1]; the model normalises by the ImageNet mean and std itself (``FTN.forward_encoder``).
Batches of ``EVAL_BATCH`` in the given order, so a test split embedded here gives the features
its evaluation computed, to the bit, before the L2 normalisation. ``flip``: each embedding is
the mean of the image's and its mirror image's, as ``evaluate.py --flip`` does (off in the
paper's protocol). Loading by MLflow run or LoggedModel is ``ablations.models.load_embedder``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from ftn_core import checkpoint
from ftn_core.config import Config, from_dict
from ftn_core.data.loading import EVAL_BATCH
from ftn_core.data.readers import IMAGE_EXTS
from ftn_core.data.transforms import build_transforms, resize_transform
from ftn_core.engine import channels_last_pooling, resolve_device
from ftn_core.errors import FTNError
from ftn_core.model import FTN, build_model

MIN_SIDE = 8
"""Images smaller than this on a side are refused: enlarged 8–32× to the model's input, they
carry no identity (the fixture trees' 8×16 images are the smallest the suite trains on)."""
CONFIG_NAME = "config.json"
"""A run's resolved config, logged beside its ``model.pt``; ``from_checkpoint`` looks for it."""

ImageLike = Any
"""A path (str or Path), encoded bytes, a PIL image, an (H, W, 3) uint8 array or a (3, H, W)
uint8 tensor."""


@dataclass(frozen=True)
class Embeddings:
    """``vectors`` (N, D) float32, each row of unit L2 norm, and the N image ``names``."""

    names: list[str]
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


def image_files(source: str | Path) -> tuple[list[str], list[str]]:
    """(paths, names) of a folder's images (every ``.jpg``/``.jpeg``/``.png`` below it, sorted;
    the name is the path inside the folder) or of a CSV's ``path`` column (relative to the CSV's
    folder, or absolute; the name is the path as written). Other columns are ignored, so the
    suite's own dataset CSVs (``path,pid,camid,split``) serve as they are."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(
            p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
        )
        if not paths:
            raise FTNError(
                f"{source}: no images in this folder (looked for "
                f"{', '.join(IMAGE_EXTS)} files, in subfolders too)"
            )
        return [str(p) for p in paths], [str(p.relative_to(source)) for p in paths]
    if source.suffix.lower() == ".csv" and source.is_file():
        with open(source, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if "path" not in (reader.fieldnames or []):
                raise FTNError(f"{source}: no 'path' column (the header must name it)")
            written = [(row["path"] or "").strip() for row in reader]
        if not written or not all(written):
            what = "an empty path" if written else "no rows"
            raise FTNError(f"{source}: {what}; list one image per row")
        return [str(source.parent / w) for w in written], written
    if not source.exists():
        raise FTNError(f"{source}: no such file or folder")
    raise FTNError(f"{source}: neither a folder of images nor a CSV with a 'path' column")


def decode(image: ImageLike, name: str) -> torch.Tensor:
    """Any ``ImageLike`` → uint8 (3, H, W) RGB; ``FTNError`` naming ``name`` for an unreadable
    file, a non-image, a wrong array shape or type, or an image under ``MIN_SIDE``."""
    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise FTNError(f"image {name}: no such file")
        image = Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = bytes(image)
        if not image:
            raise FTNError(f"image {name}: empty file; give an image file")
        if image[:3] == b"\xff\xd8\xff" and b"\xff\xd9" not in image[-32:]:
            # A JPEG cut short decodes with its missing part grey: refused, as the readers do.
            raise FTNError(f"image {name}: a truncated JPEG (no end marker); give the whole file")
        data = torch.frombuffer(bytearray(image), dtype=torch.uint8)
        try:
            with warnings.catch_warnings():  # torchvision 0.29's note on its decoders' future
                warnings.simplefilter("ignore", DeprecationWarning)
                img = decode_image(data, mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError):  # torchvision's message names its C++ source file
            raise FTNError(
                f"image {name}: not a JPEG, PNG, GIF or WEBP image, or a damaged one; "
                f"give an image file"
            ) from None
    elif _is_pil(image):
        img = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise FTNError(
                f"image {name}: an array must be uint8 (H, W, 3) RGB, got "
                f"{image.dtype} {image.shape}"
            )
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W)
    elif isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise FTNError(
                f"image {name}: a tensor must be uint8 (3, H, W) RGB, got "
                f"{image.dtype} {tuple(image.shape)}"
            )
        img = image.cpu()
    else:
        raise FTNError(
            f"image {name}: a {type(image).__name__} is not an image; give a path, "
            f"bytes, a PIL image or a uint8 (H, W, 3) array"
        )
    h, w = img.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise FTNError(
            f"image {name} is {w}×{h} pixels; it needs at least {MIN_SIDE} on each "
            f"side (a person crop, enlarged to the model's input)"
        )
    return img


def _is_pil(image: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(image, Image.Image)


def _as_items(
    images: ImageLike | Iterable[ImageLike] | str | Path, names: Sequence[str] | None
) -> tuple[list[ImageLike], list[str]]:
    """A folder, a CSV, one image or a list of them → (items, names)."""
    if isinstance(images, (str, Path)) and (
        Path(images).is_dir() or str(images).lower().endswith(".csv")
    ):
        items, found = image_files(images)
        return items, list(names) if names is not None else found
    one = (str, Path, bytes, bytearray, np.ndarray, torch.Tensor)
    if isinstance(images, one) or _is_pil(images):
        images = [images]
    items = list(images)
    if names is None:
        names = [
            str(x) if isinstance(x, (str, Path)) else f"image_{i}" for i, x in enumerate(items)
        ]
    if len(names) != len(items):
        raise FTNError(f"{len(names)} names for {len(items)} images; give one name per image")
    return items, list(names)


class Embedder:
    """A trained FTN in eval mode with its input size: ``embed(images)`` → ``Embeddings``.

    ``model``'s eval forward gives the test embedding (the branches' features concatenated,
    before normalisation); ``height`` × ``width``: the run's ``data.height`` / ``data.width``.
    ``device``: auto (the GPU when there is one), cpu, cuda or cuda:N.
    """

    def __init__(
        self,
        model: FTN,
        height: int,
        width: int,
        device: str | torch.device = "cpu",
        batch_size: int = EVAL_BATCH,
        flip: bool = False,
        source: str = "",
        config: Config | None = None,
    ) -> None:
        self.device = (
            device if isinstance(device, torch.device) else resolve_device(device, "device")
        )
        self.model = model.eval().to(self.device)
        self.height, self.width = int(height), int(width)
        self.batch_size, self.flip, self.source = batch_size, flip, source
        self.config = config
        """The run's config, when known (what data it was trained on, its variant)."""
        self._resize = resize_transform(self.height, self.width)
        self._to_float = build_transforms(self.height, self.width, train=False, resize=False)

    @property
    def dim(self) -> int:
        return self.model.embedding_dim

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_state(
        cls, cfg: Config, state: dict[str, torch.Tensor], source: str = "weights", **kwargs: Any
    ) -> Embedder:
        """``cfg``'s model with the state dict ``state`` (the classifiers sized from it)."""
        return cls(
            model_from_state(cfg, state, source),
            cfg.data.height,
            cfg.data.width,
            source=source,
            config=cfg,
            **kwargs,
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, config: Config | dict | str | Path | None = None, **kwargs: Any
    ) -> Embedder:
        """A run's ``model.pt`` (a state dict) or the runner's resumable checkpoint
        (``<name>-<run id>.pt``: its ``model`` entry), with the run's config: ``config`` (a
        ``Config``, its dict or a config.json path) or else the config.json beside ``path``."""
        path = Path(path)
        if not path.is_file():
            raise FTNError(f"checkpoint {path}: no such file")
        cfg = read_config(config if config is not None else path.parent / CONFIG_NAME, path)
        return cls.from_state(cfg, read_state(path), source=str(path), **kwargs)

    # ------------------------------------------------------------------ embedding
    def preprocess(self, image: ImageLike, name: str = "image") -> torch.Tensor:
        """One image → uint8 (3, H, W) at the model's input size (the evaluation's resize)."""
        return self._resize(tv_tensors.Image(decode(image, name))).as_subclass(torch.Tensor)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor, flip: bool | None = None) -> torch.Tensor:
        """uint8 (B, 3, H, W) at the input size → L2-normalised float32 (B, D) on the CPU."""
        img = self._to_float(tv_tensors.Image(batch)).as_subclass(torch.Tensor).to(self.device)
        self.model.eval()  # the test embedding (a train-mode forward is the training output)
        pooling = (
            channels_last_pooling(self.model)
            if self.device.type == "cpu"
            else contextlib.nullcontext()
        )
        with pooling:
            feat = self.model(img).float()
            if self.flip if flip is None else flip:
                feat = (feat + self.model(img.flip(-1)).float()) / 2
        return F.normalize(feat, dim=1).cpu()

    def embed(
        self,
        images: ImageLike | Iterable[ImageLike],
        names: Sequence[str] | None = None,
        flip: bool | None = None,
    ) -> Embeddings:
        """Images (a folder, a CSV with a ``path`` column, or a list of ``ImageLike``) →
        ``Embeddings`` in the same order. A bad image stops it with one ``FTNError`` naming it
        (an unreadable file, a non-image, one under ``MIN_SIDE``)."""
        items, names = _as_items(images, names)
        if not items:
            raise FTNError("no images given")
        vectors = np.empty((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(items), self.batch_size):
            part = range(start, min(start + self.batch_size, len(items)))
            batch = torch.stack([self.preprocess(items[i], names[i]) for i in part])
            vectors[start : part.stop] = self.forward(batch, flip).numpy()
        return Embeddings(names, vectors)


def read_config(config: Config | dict | str | Path, weights: str | Path = "") -> Config:
    """A ``Config`` from itself, its dict or a config.json file; ``FTNError`` if none fits."""
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return from_dict(config)
    path = Path(config)
    if not path.is_file():
        raise FTNError(
            f"checkpoint {weights}: no {CONFIG_NAME} beside it; give the run's config "
            f"(its {CONFIG_NAME} artifact) or load it by run id"
        )
    try:
        return from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError, AttributeError) as err:
        raise FTNError(f"{path}: not a run's config ({str(err).splitlines()[0][:100]})") from None
    except FTNError as err:
        raise FTNError(f"{path}: not a config of this suite ({err})") from None


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model's state dict from ``model.pt`` or a training checkpoint (its ``model``)."""
    try:
        state = checkpoint.load(path)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a file that is no checkpoint
        raise FTNError(
            f"{path}: not a torch checkpoint ({str(err).splitlines()[0][:100]})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # the runner's resumable checkpoint
    if not isinstance(state, dict) or "heads.global.classifier.weight" not in state:
        raise FTNError(
            f"{path}: not the weights of an FTN model (a run's model.pt or its training checkpoint)"
        )
    return state


def model_from_state(cfg: Config, state: dict[str, torch.Tensor], source: str = "weights") -> FTN:
    """``cfg``'s model with ``state`` loaded, in eval mode on the CPU; weights of another
    variant (a key missing or unexpected, a shape that differs) are one ``FTNError``."""
    num_classes = int(state["heads.global.classifier.weight"].shape[0])
    model = build_model(cfg.model, num_classes, load_init=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        wanted, given = set(model.state_dict()), set(state)
        missing, extra = sorted(wanted - given), sorted(given - wanted)
        what = (
            f"missing {len(missing)} (e.g. {missing[0]})"
            if missing
            else f"{len(extra)} unexpected (e.g. {extra[0]})"
            if extra
            else str(err).splitlines()[-1].strip()[:120]
        )
        raise FTNError(
            f"{source}: the weights do not fit the config's model "
            f"({cfg.model.backbone}, attention={cfg.model.attention}, "
            f"decoder={cfg.model.decoder}): {what}; give the config of the run that "
            f"saved them"
        ) from None
    return model.eval()
