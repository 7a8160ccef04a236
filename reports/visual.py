"""Visual figures from the saved weights, in the style of the paper's Figures 4 and 5.

- Fig. 4: activation maps of S-Enc stage 3 and of CFA's output A′ for three pedestrians.
- Fig. 5: global- and local-branch maps for one identity seen in different cameras
  (different backgrounds), Baseline beside the full model.
- TF-Dec: input, masked reconstruction target and the decoder's output per variant.
Maps are ``ftn_core.evaluation.activation_map`` (channel mean of the squared response),
upsampled to the image and min-max scaled per image (one colour bar per figure); all models run
in eval mode. Where the images have person masks, each map's title gives its foreground share
(fg) and the input's the share a uniform map would score (the mask's area), with the mask
outlined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from ablations.store import REPO  # noqa: E402
from ftn_core.config import Config, from_dict  # noqa: E402
from ftn_core.data.dataset import ReIDDataset  # noqa: E402
from ftn_core.data.loading import load_splits  # noqa: E402
from ftn_core.data.transforms import build_transforms  # noqa: E402
from ftn_core.data.types import DatasetSplits, Sample  # noqa: E402
from ftn_core.errors import FTNError  # noqa: E402
from ftn_core.evaluation import activation_map, foreground_focus  # noqa: E402
from ftn_core.masks import reconstruction_target  # noqa: E402
from ftn_core.model import FTN, model_from_state  # noqa: E402
from reports.figures import save, wrap  # noqa: E402
from reports.load import artifact_json, artifact_path  # noqa: E402

FULL = {1: "cfa", 2: "g", 3: "ftn"}
"""The variant that is the paper's full model in each table."""
SHORT = {"base": "Base", "cfa": "Base+CFA", "g": "FTN (g)", "ftn": "FTN"}
"""Column names of the Fig. 5 panel."""


class Skip(Exception):
    """A figure that cannot be drawn; the message says why (shown in the report)."""


def run_config(client: MlflowClient, run: Any) -> Config:
    """The resolved config of a run, from its ``config.json`` artifact."""
    d = artifact_json(client, run, "config.json")
    if d is None:
        raise Skip(f"{run.name}: no config.json artifact")
    try:
        return from_dict(d)
    except FTNError as err:
        raise Skip(f"{run.name}: config.json does not match this code ({err})") from None


def run_model(client: MlflowClient, run: Any) -> tuple[FTN, Config]:
    """The final model of a run (``model.pt``, a state dict) in eval mode."""
    cfg = run_config(client, run)
    path = artifact_path(client, run, "model.pt")
    if path is None:
        raise Skip(f"{run.name}: no model.pt artifact")
    try:
        model = model_from_state(cfg.model, torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError, OSError, FTNError) as err:
        raise Skip(f"{run.name}: model.pt does not load ({str(err).splitlines()[0][:120]})") from None
    return model.eval(), cfg


def query_data(cfg: Config) -> DatasetSplits:
    """The run's dataset (synthetic data regenerates deterministically); relative roots are
    taken from the repository root."""
    data = cfg.data
    if not Path(data.root).is_absolute():
        from dataclasses import replace

        data = replace(data, root=str(REPO / data.root))
    try:
        return load_splits(data)
    except FTNError as err:
        raise Skip(f"dataset {data.dataset} not readable under {data.root} ({err})") from None


def _images(samples: list[Sample], cfg: Config) -> tuple[torch.Tensor, torch.Tensor | None]:
    ds = ReIDDataset(samples, build_transforms(cfg.data.height, cfg.data.width, train=False),
                     with_mask=all(s.mask_path for s in samples))
    items = [ds[i] for i in range(len(ds))]
    img = torch.stack([it["img"] for it in items])  # (B, 3, H, W)
    mask = torch.stack([it["mask"] for it in items]) if "mask" in items[0] else None  # (B, 1, H, W)
    return img, mask


def pick_pedestrians(splits: DatasetSplits, n: int = 3) -> list[Sample]:
    """``n`` queries of different identities, spread over the query list (deterministic)."""
    firsts: dict[int, Sample] = {}
    for s in splits.query:
        firsts.setdefault(s.pid, s)
    pool = list(firsts.values())
    if not pool:
        raise Skip("the dataset has no query images")
    step = max(1, len(pool) // n)
    return pool[::step][:n]


def pick_identity(splits: DatasetSplits, n: int = 4) -> list[Sample]:
    """Images of the test identity seen by the most cameras, one per camera (Fig. 5)."""
    by_pid: dict[int, dict[int, Sample]] = {}
    for s in splits.query + splits.gallery:
        if s.pid > 0:
            by_pid.setdefault(s.pid, {}).setdefault(s.camid, s)
    if not by_pid:
        raise Skip("the dataset has no test identities")
    pid = max(sorted(by_pid), key=lambda p: len(by_pid[p]))
    return [by_pid[pid][c] for c in sorted(by_pid[pid])][:n]


CMAP = "jet"
MAP_ALPHA = 0.45


def _overlay(ax: plt.Axes, img: torch.Tensor, act: torch.Tensor | None, title: str,
             mask: torch.Tensor | None = None) -> None:
    """img (3, H, W) in [0, 1]; act (h, w) upsampled and min-max scaled over it; mask (1, H, W)
    outlined in white."""
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="none")  # (H, W, 3)
    if act is not None:
        up = F.interpolate(act[None, None], size=img.shape[-2:], mode="bilinear",
                           align_corners=False)[0, 0]  # (H, W)
        up = (up - up.min()) / (up.max() - up.min()).clamp_min(1e-12)
        ax.imshow(up.numpy(), cmap=CMAP, vmin=0, vmax=1, alpha=MAP_ALPHA, interpolation="none")
    if mask is not None:
        ax.contour(mask[0].numpy(), levels=[0.5], colors="white", linewidths=0.8)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _colour_bar(fig: plt.Figure, axes) -> None:
    """The one colour bar of the overlays (each map min-max scaled over its image)."""
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), CMAP), ax=axes, location="bottom",
                       shrink=0.8, aspect=30, pad=0.02, alpha=MAP_ALPHA)
    bar.set_label("activation, min–max scaled per image", fontsize=7)
    bar.set_ticks([0, 0.5, 1], labels=["min", "", "max"])
    bar.ax.tick_params(labelsize=7)


def uniform_share(mask: torch.Tensor | None, i: int) -> float | None:
    """Percent of image ``i``'s pixels inside its person mask: the fg of a uniform map."""
    return None if mask is None else 100.0 * float((mask[i] > 0).float().mean())


def _input_title(name: str, mask: torch.Tensor | None, i: int) -> str:
    share = uniform_share(mask, i)
    return name if share is None else f"{name}\nuniform {share:.0f} %"


MASK_NOTE = ("fg = share of the map's mass inside the person mask (white outline); "
             "uniform = a flat map's fg")


def _maps(model: FTN, img: torch.Tensor, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        feats = model.activation_maps(img)
    return {k: activation_map(feats[k]) for k in keys if k in feats}  # each (B, h, w)


def _focus_title(name: str, act: torch.Tensor, mask: torch.Tensor | None, i: int) -> str:
    if mask is None:
        return name
    share = float(foreground_focus(act[i:i + 1], mask[i:i + 1])[0]) * 100
    return f"{name}\nfg {share:.0f} %"


def figure_stage3_vs_cfa(model: FTN, cfg: Config, splits: DatasetSplits, label: str,
                         stem: Path) -> list[Path]:
    """Paper Fig. 4: stage 3 vs CFA activation maps of three pedestrians."""
    if model.attention is None:
        raise Skip(f"{label} has no attention module")
    img, mask = _images(pick_pedestrians(splits), cfg)
    maps = _maps(model, img, ("stage3", "attn"))
    fig, axes = plt.subplots(len(img), 3, figsize=(3.8, 2.3 * len(img) + 0.9), squeeze=False,
                             layout="constrained")
    for i in range(len(img)):
        m = mask[i] if mask is not None else None
        _overlay(axes[i, 0], img[i], None, _input_title("input", mask, i), m)
        _overlay(axes[i, 1], img[i], maps["stage3"][i], _focus_title("stage 3", maps["stage3"], mask, i), m)
        _overlay(axes[i, 2], img[i], maps["attn"][i], _focus_title("CFA (A′)", maps["attn"], mask, i), m)
    _colour_bar(fig, axes)
    note = f"\n{wrap(MASK_NOTE, 50)}" if mask is not None else ""
    fig.suptitle(f"Stage 3 vs CFA — {wrap(label, 50)}{note}", fontsize=7)
    return save(fig, stem, palette=False)  # photos under heat maps: full colour


def figure_global_local(models: dict[str, tuple[FTN, Config]], splits: DatasetSplits,
                        stem: Path) -> list[Path]:
    """Paper Fig. 5: global / local branch maps of one identity across cameras, per model."""
    samples = pick_identity(splits)
    cols = ["input"] + [f"{name} {b}" for name in models for b in ("global", "local")]
    fig, axes = plt.subplots(len(samples), len(cols), squeeze=False, layout="constrained",
                             figsize=(1.25 * len(cols), 2.3 * len(samples) + 0.9))
    for j, (name, (model, cfg)) in enumerate(models.items()):
        img, mask = _images(samples, cfg)
        maps = _maps(model, img, ("global", "local"))
        for i in range(len(img)):
            m = mask[i] if mask is not None else None
            if j == 0:
                _overlay(axes[i, 0], img[i], None, _input_title(f"cam {samples[i].camid + 1}", mask, i), m)
            for k, b in enumerate(("global", "local")):
                _overlay(axes[i, 1 + 2 * j + k], img[i], maps[b][i],
                         _focus_title(f"{name}\n{b}", maps[b], mask, i), m)
    _colour_bar(fig, axes)
    note = f"\n{MASK_NOTE}" if mask is not None else ""
    fig.suptitle(f"Global and local branches, identity {samples[0].pid} in "
                 f"{len(samples)} cameras{note}", fontsize=7)
    return save(fig, stem, palette=False)  # photos under heat maps: full colour


def figure_reconstructions(models: dict[str, tuple[FTN, Config]], splits: DatasetSplits,
                           stem: Path, n_images: int = 2) -> list[Path]:
    """TF-Dec: input, masked target and reconstruction for each variant with a decoder (the
    ``oracle`` target needs the images' person masks; without them its row is left out)."""
    samples = pick_pedestrians(splits, n_images)
    has_masks = all(s.mask_path for s in samples)
    models = {k: m for k, m in models.items() if m[0].decoder is not None
              and (has_masks or m[0].mask != "oracle")}
    if not models:
        raise Skip("no variant has a TF-Dec decoder")
    fig, axes = plt.subplots(len(models), 3 * len(samples),
                             figsize=(0.95 * 3 * len(samples), 1.9 * len(models)), squeeze=False)
    for r, (name, (model, cfg)) in enumerate(models.items()):
        img, mask = _images(samples, cfg)
        with torch.no_grad():
            enc = model.forward_encoder(img)
            recon = model.forward_decoder(enc)  # (B, 3, H, W)
            pa = enc.attn.pa if enc.attn is not None else None
            ca = enc.attn.ca if enc.attn is not None else None
            target = reconstruction_target(img, model.mask, pa, ca, model.gauss_sy,
                                           model.gauss_sx, mask if model.mask == "oracle" else None)
        for i in range(len(samples)):
            for c, (title, x) in enumerate((("input", img[i]), ("target", target[i]),
                                            ("output", recon[i]))):
                _overlay(axes[r, 3 * i + c], x, None, title if r == 0 else "")
        axes[r, 0].text(-0.15, 0.5, name, transform=axes[r, 0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=8)
    fig.suptitle("TF-Dec reconstructions (input, masked target, output)", fontsize=8)
    fig.tight_layout()
    return save(fig, stem, palette=False)  # photos under heat maps: full colour
