"""The inference embedding model as ONNX, and its check against PyTorch on real images.

Where preprocessing lives: decoding and the resize stay **outside** the graph, normalisation is
**inside**. The graph's input ``images`` is float32 (N, 3, H, W) RGB in [0, 1], each image already
resized to the run's H × W (bilinear, antialiased, on uint8: ``Embedder.preprocess``, as the
evaluation does); it subtracts the ImageNet mean and divides by the std itself (the model's own
first step) and returns ``embeddings`` (N, D), L2-normalised. The batch dimension is dynamic. The
resize stays out so that the graph sees exactly the pixels the evaluation feeds the model (torch
resizes uint8 images with its own antialiasing filter and rounding, which ONNX's Resize is not
bound to reproduce, and images of every size are one batch only once resized). The model's
metadata (``metadata_props``) says all this, with H, W and D.

Exported with torch's TorchScript-based exporter (``dynamo=False``): the torch.export-based one
fails on torch 2.14 because the model's branch ``heads.global`` is a Python keyword, which its
generated code cannot name.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ftn_core.embedder import Embedder
from ftn_core.errors import FTNError

OPSET = 17
TOLERANCE = 1e-4
"""Largest absolute difference allowed between ONNX and PyTorch normalised embeddings."""
CHECK_TOP = 10


class InferenceNet(nn.Module):
    """What the graph computes: images (N, 3, H, W) in [0, 1] → L2-normalised (N, D), the
    mirror image's embedding averaged in when ``flip``."""

    def __init__(self, model: nn.Module, flip: bool = False) -> None:
        super().__init__()
        self.model, self.flip = model.eval(), flip

    def forward(self, images: Tensor) -> Tensor:
        feat = self.model(images)  # (N, D), normalised by ImageNet mean/std inside
        if self.flip:
            feat = (feat + self.model(images.flip(-1))) / 2
        return F.normalize(feat, dim=1)


def metadata(embedder: Embedder, flip: bool, source: str) -> dict[str, str]:
    h, w = embedder.height, embedder.width
    return {
        "input": f"images: float32 (N, 3, {h}, {w}) RGB in [0, 1]",
        "preprocessing_outside": f"decode to RGB uint8, resize to {h}x{w} (bilinear, antialiased, "
        f"on uint8, as torchvision.transforms.v2.Resize), divide by 255",
        "preprocessing_inside": "subtract the ImageNet mean (0.485, 0.456, 0.406), divide by its "
        "std (0.229, 0.224, 0.225)",
        "output": f"embeddings: float32 (N, {embedder.dim}), L2-normalised; rank by cosine "
        f"distance",
        "height": str(h),
        "width": str(w),
        "dim": str(embedder.dim),
        "flip_averaged": str(flip).lower(),
        "source": source,
    }


def export(embedder: Embedder, out: str | Path, flip: bool = False, source: str = "") -> Path:
    """Write the ONNX model to ``out`` (a temporary file renamed into place); returns it."""
    import onnx

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = InferenceNet(embedder.model.cpu(), flip).eval()
    dummy = torch.rand(2, 3, embedder.height, embedder.width)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # plain open: the umask's permissions
    try:
        with warnings.catch_warnings():  # the legacy exporter's notice; CMP's channel check
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (dummy,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=["images"],
                output_names=["embeddings"],
                dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            )
        graph = onnx.load(str(tmp))
        # The exporter leaves D symbolic after the normalisation's division: name it.
        graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value = embedder.dim
        for key, value in metadata(embedder, flip, source or embedder.source).items():
            graph.metadata_props.add(key=key, value=value)
        graph.doc_string = "FTN person re-identification embeddings (ftn-ablation-suite)"
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    embedder.model.eval().to(embedder.device)  # the exporter restores the mode it found
    return out


@dataclass(frozen=True)
class Check:
    """ONNX against PyTorch on the same images: the largest absolute difference of the
    normalised embeddings, and how many queries got the same top 10 of the gallery."""

    images: int
    max_abs_diff: float
    queries: int
    same_top: int

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= TOLERANCE and self.same_top == self.queries

    def line(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"ONNX against PyTorch on {self.images} images: max |Δ| of normalised embeddings "
            f"{self.max_abs_diff:.1e} (allowed {TOLERANCE:.0e}), top-{CHECK_TOP} of the "
            f"gallery identical for {self.same_top}/{self.queries} queries: {verdict}"
        )


def session(path: str | Path):
    """An onnxruntime CPU session of the model at ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_embed(sess, embedder: Embedder, paths: Sequence[str]) -> np.ndarray:
    """The ONNX model's (N, D) embeddings of the image files, preprocessed as ``embedder``
    does, in batches of its batch size."""
    out = []
    for start in range(0, len(paths), embedder.batch_size):
        part = paths[start : start + embedder.batch_size]
        batch = torch.stack([embedder.preprocess(p, p) for p in part])  # (B, 3, H, W) uint8
        images = batch.float().div_(255).numpy()  # (B, 3, H, W) in [0, 1], as ToDtype(scale=True)
        out.append(sess.run(["embeddings"], {"images": images})[0])
    return np.concatenate(out)


def top(query: np.ndarray, gallery: np.ndarray, k: int = CHECK_TOP) -> np.ndarray:
    """(Q, k) gallery indices by cosine distance, nearest first (ties: gallery order)."""
    return np.argsort(1.0 - query @ gallery.T, axis=1, kind="stable")[:, :k]


def check(
    path: str | Path,
    embedder: Embedder,
    query: Sequence[str],
    gallery: Sequence[str],
    flip: bool = False,
) -> Check:
    """Embed ``query`` and ``gallery`` (image files) with the ONNX model at ``path`` and with
    PyTorch; compare the embeddings and each query's top 10."""
    if not query or not gallery:
        raise FTNError("the ONNX check needs query and gallery images")
    sess = session(path)
    paths = list(query) + list(gallery)
    ours = onnx_embed(sess, embedder, paths)
    reference = embedder.embed(paths, flip=flip).vectors
    n_q = len(query)
    same = (top(ours[:n_q], ours[n_q:]) == top(reference[:n_q], reference[n_q:])).all(axis=1)
    return Check(len(paths), float(np.abs(ours - reference).max()), n_q, int(same.sum()))
