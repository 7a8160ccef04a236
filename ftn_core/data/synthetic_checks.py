"""Diagnostics of the synthetic benchmark: how strong its background shortcut is, and a picture.

``bias_stats`` measures the train background/identity correlation from ``scenes.csv``;
``shortcut_rank1`` scores nearest-neighbour probes that see only background or only person
pixels (paper Figure 1: a background cue that identifies on train and misleads at test).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ftn_core.data.readers import MARKET_PATTERN, SPLIT_DIRS
from ftn_core.data.types import DatasetSplits
from ftn_core.errors import FTNError

TRAIN, QUERY, GALLERY = SPLIT_DIRS["train"], SPLIT_DIRS["query"], SPLIT_DIRS["gallery"]


def bias_stats(rows: list[dict], top: int = 2) -> dict[str, float]:
    """How strongly train backgrounds predict identity, from ``read_scenes`` rows.

    ``cam_top_share``: mean share of an identity's train images in its ``top`` most frequent
    cameras; ``obj_top_share``: mean share with its most frequent background object (none
    counts as one more "object"); ``cam_uniform``: ``top`` / number of cameras.
    """
    by_pid: dict[int, list[dict]] = {}
    for r in rows:
        if r["split"] == TRAIN:
            by_pid.setdefault(r["pid"], []).append(r)
    cams = {r["cam"] for r in rows}
    cam_share, obj_share = [], []
    for items in by_pid.values():
        cam_counts = np.bincount([r["cam"] for r in items])
        obj_counts = np.bincount([r["obj"] + 1 for r in items])
        cam_share.append(np.sort(cam_counts)[::-1][:top].sum() / len(items))
        obj_share.append(obj_counts.max() / len(items))
    return {
        "cam_top_share": float(np.mean(cam_share)),
        "obj_top_share": float(np.mean(obj_share)),
        "cam_uniform": top / len(cams),
    }


def _descriptor(path: str, mask_path: str, region: str, grid: tuple[int, int]) -> np.ndarray:
    """Mean colour of the ``region`` ("background" | "person") pixels in each grid cell,
    standardised over the descriptor (invariant to brightness and contrast)."""
    img = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255  # (H, W, 3)
    m = np.asarray(Image.open(mask_path)) > 127
    keep = (~m if region == "background" else m).astype(np.float32)  # (H, W)
    gh, gw = grid
    H, W = (img.shape[0] // gh) * gh, (img.shape[1] // gw) * gw
    num = (img[:H, :W] * keep[:H, :W, None]).reshape(gh, H // gh, gw, W // gw, 3).sum(axis=(1, 3))
    den = keep[:H, :W].reshape(gh, H // gh, gw, W // gw).sum(axis=(1, 3))  # (gh, gw)
    desc = (num / np.maximum(den, 1)[..., None]).ravel()
    return (desc - desc.mean()) / (desc.std() + 1e-6)


def shortcut_rank1(
    splits: DatasetSplits, region: str = "background", grid: tuple[int, int] = (8, 4)
) -> dict[str, float]:
    """Rank-1 of a model that sees only ``region`` pixels (a grid of mean colours, NN search).

    ``train``: leave-one-out among train images (what a classifier can fit); ``test``: query
    vs gallery with the Market protocol (same pid and camera removed). A strong background
    shortcut scores high on train and low on test.
    """

    def feats(samples):
        return np.stack([_descriptor(s.path, s.mask_path, region, grid) for s in samples])

    tr = feats(splits.train)
    d = ((tr[:, None] - tr[None]) ** 2).sum(-1)  # (N, N)
    np.fill_diagonal(d, np.inf)
    t_pid = np.array([s.pid for s in splits.train])
    train_r1 = float((t_pid[d.argmin(1)] == t_pid).mean())
    q, g = feats(splits.query), feats(splits.gallery)
    d = ((q[:, None] - g[None]) ** 2).sum(-1)  # (Q, G)
    qp, qc = np.array([s.pid for s in splits.query]), np.array([s.camid for s in splits.query])
    gp, gc = np.array([s.pid for s in splits.gallery]), np.array([s.camid for s in splits.gallery])
    d[(qp[:, None] == gp[None]) & (qc[:, None] == gc[None])] = np.inf
    return {"train": train_r1, "test": float((gp[d.argmin(1)] == qp).mean())}


def save_grid(dataset_dir: str, out: str, rows: int = 4, cols: int = 4) -> str:
    """A picture of ``rows`` test identities (those seen by most cameras) in up to ``cols``
    cameras each, every image beside its mask; (rows·H + 4(rows−1)) × (cols·2W + 6(cols−1))."""
    by_pid: dict[int, dict[int, str]] = {}
    for split in (QUERY, GALLERY):
        for name in sorted(os.listdir(os.path.join(dataset_dir, split))):
            m = MARKET_PATTERN.match(name)
            if m and int(m.group(1)) > 0:
                by_pid.setdefault(int(m.group(1)), {}).setdefault(
                    int(m.group(2)), f"{split}/{name}"
                )
    chosen = sorted(by_pid, key=lambda p: (-len(by_pid[p]), p))[:rows]
    if not chosen:
        raise FTNError(f"{dataset_dir} has no test images; regenerate it with --force")
    tiles = []
    for pid in chosen:
        row = []
        for cam in sorted(by_pid[pid])[:cols]:
            rel = by_pid[pid][cam]
            img = np.asarray(Image.open(os.path.join(dataset_dir, rel)).convert("RGB"))
            mask = np.asarray(Image.open(os.path.join(dataset_dir, "masks", rel[:-4] + ".png")))
            row.append(np.concatenate([img, np.repeat(mask[..., None], 3, axis=2)], axis=1))
        h, w = row[0].shape[:2]  # (H, 2W)
        row += [np.full((h, w, 3), 255, np.uint8)] * (cols - len(row))
        gap = np.full((h, 6, 3), 255, np.uint8)
        tiles.append(np.concatenate([t for r in row for t in (r, gap)][:-1], axis=1))
        tiles.append(np.full((4, tiles[-1].shape[1], 3), 255, np.uint8))
    picture = Image.fromarray(np.concatenate(tiles[:-1], axis=0))
    picture.quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)  # small for a README
    return out
