"""What a report's visual figures show, computed from a trained model once, where it ran.

``figure_arrays`` runs the model (eval mode) on a few fixed test images and returns plain
arrays; a report draws the paper's Figures 4 and 5 and the TF-Dec reconstructions from them
without loading a model (``reports/visual.py``):

- ``ped_*``: three queries of different identities (Fig. 4): the images, the maps of S-Enc
  stage 3 and of CFA's output A′ (``attn``, only with an attention module);
- ``id_*``: the test identity seen by the most cameras, one image per camera (Fig. 5): the maps
  of the global and local branches;
- ``rec_*``: two of the Fig. 4 queries: input, masked reconstruction target and TF-Dec's output
  (only with a decoder; the ``oracle`` target only where the images have person masks).

Images are uint8 (n, H, W, 3); maps are ``ftn_core.evaluation.activation_map`` at the feature
map's size (n, h, w), float32; ``*_fg_<map>`` is each map's foreground share in percent
(``foreground_focus``) and ``*_mask`` the person masks (n, H, W) where the data has them.
"""

from __future__ import annotations

import numpy as np
import torch

from ftn_core.config import Config
from ftn_core.data.dataset import ReIDDataset
from ftn_core.data.transforms import build_transforms
from ftn_core.data.types import DatasetSplits, Sample
from ftn_core.evaluation import activation_map, foreground_focus
from ftn_core.masks import reconstruction_target
from ftn_core.model import FTN

PEDESTRIANS = 3
RECONSTRUCTIONS = 2
CAMERAS = 4


def pick_pedestrians(splits: DatasetSplits, n: int = PEDESTRIANS) -> list[Sample]:
    """``n`` queries of different identities, spread over the query list (deterministic)."""
    firsts: dict[int, Sample] = {}
    for s in splits.query:
        firsts.setdefault(s.pid, s)
    pool = list(firsts.values())
    step = max(1, len(pool) // n)
    return pool[::step][:n]


def pick_identity(splits: DatasetSplits, n: int = CAMERAS) -> list[Sample]:
    """Images of the test identity seen by the most cameras, one per camera (Fig. 5)."""
    by_pid: dict[int, dict[int, Sample]] = {}
    for s in splits.query + splits.gallery:
        if s.pid > 0:
            by_pid.setdefault(s.pid, {}).setdefault(s.camid, s)
    if not by_pid:
        return []
    pid = max(sorted(by_pid), key=lambda p: len(by_pid[p]))
    return [by_pid[pid][c] for c in sorted(by_pid[pid])][:n]


def _images(samples: list[Sample], cfg: Config) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, 3, H, W) in [0, 1] as the model sees them at test time, and the (B, 1, H, W) masks
    where every sample has one."""
    ds = ReIDDataset(
        samples,
        build_transforms(cfg.data.height, cfg.data.width, train=False),
        with_mask=all(s.mask_path for s in samples),
    )
    items = [ds[i] for i in range(len(ds))]
    img = torch.stack([it["img"] for it in items])
    mask = torch.stack([it["mask"] for it in items]) if "mask" in items[0] else None
    return img, mask


def _uint8(img: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] → (B, H, W, 3) uint8."""
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _maps(
    model: FTN,
    img: torch.Tensor,
    mask: torch.Tensor | None,
    keys: tuple[str, ...],
    prefix: str,
    out: dict[str, np.ndarray],
) -> None:
    with torch.no_grad():
        feats = model.activation_maps(img)
    for k in keys:
        if k not in feats:
            continue
        act = activation_map(feats[k])  # (B, h, w)
        out[f"{prefix}_{k}"] = act.float().numpy()
        if mask is not None:
            out[f"{prefix}_fg_{k}"] = 100.0 * foreground_focus(act, mask).float().numpy()


def figure_arrays(model: FTN, cfg: Config, splits: DatasetSplits) -> dict[str, np.ndarray]:
    """The arrays a report's visual figures are drawn from (module docstring); empty when the
    test split has no queries."""
    model = model.eval()
    out: dict[str, np.ndarray] = {}
    peds = pick_pedestrians(splits)
    if not peds:
        return out
    img, mask = _images(peds, cfg)
    out["ped_img"] = _uint8(img)
    out["ped_pid"] = np.array([s.pid for s in peds], dtype=np.int64)
    if mask is not None:
        out["ped_mask"] = (mask[:, 0] > 0).numpy().astype(np.uint8)
    _maps(model, img, mask, ("stage3", "attn"), "ped", out)
    ident = pick_identity(splits)
    if ident:
        img_i, mask_i = _images(ident, cfg)
        out["id_img"] = _uint8(img_i)
        out["id_camid"] = np.array([s.camid for s in ident], dtype=np.int64)
        out["id_pid"] = np.array([s.pid for s in ident], dtype=np.int64)
        if mask_i is not None:
            out["id_mask"] = (mask_i[:, 0] > 0).numpy().astype(np.uint8)
        _maps(model, img_i, mask_i, ("global", "local"), "id", out)
    if model.decoder is not None and (mask is not None or model.mask != "oracle"):
        x = img[:RECONSTRUCTIONS]
        m = mask[:RECONSTRUCTIONS] if mask is not None else None
        with torch.no_grad():
            enc = model.forward_encoder(x)
            recon = model.forward_decoder(enc)  # (B, 3, H, W)
            pa = enc.attn.pa if enc.attn is not None else None
            ca = enc.attn.ca if enc.attn is not None else None
            target = reconstruction_target(
                x,
                model.mask,
                pa,
                ca,
                model.gauss_sy,
                model.gauss_sx,
                m if model.mask == "oracle" else None,
            )
        out["rec_img"], out["rec_target"], out["rec_output"] = (
            _uint8(t) for t in (x, target, recon)
        )
    return out
