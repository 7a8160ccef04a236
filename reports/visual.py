"""Visual figures in the style of the paper's Figures 4 and 5, drawn from what each run logged.

- Fig. 4: activation maps of S-Enc stage 3 and of CFA's output A′ for three pedestrians.
- Fig. 5: global- and local-branch maps for one identity seen in different cameras
  (different backgrounds), Baseline beside the full model.
- TF-Dec: input, masked reconstruction target and the decoder's output per variant.

Nothing here runs a model: a run logs ``figure_data.npz`` when it finishes
(``ftn_core/figure_data.py``: the images, the maps ``ftn_core.evaluation.activation_map``
gives, their foreground shares; ``python ablations/per_query.py`` adds it to older runs).
Maps are drawn bilinearly over their image and min-max scaled per image (one colour bar per
figure). Where the images have person masks, each map's title gives its foreground share (fg)
and the input's the share a uniform map would score (the mask's area), with the mask outlined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from ablations.store import FIGURE_DATA, REPO  # noqa: E402
from ftn_core.config import Config, from_dict  # noqa: E402
from ftn_core.data.splits import load_splits  # noqa: E402
from ftn_core.data.types import DatasetSplits  # noqa: E402
from ftn_core.errors import FTNError  # noqa: E402
from reports.figures import save, wrap  # noqa: E402
from reports.load import artifact_json, artifact_path  # noqa: E402


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


def figure_data(client: MlflowClient, run: Any) -> dict[str, np.ndarray]:
    """The arrays of the run's ``figure_data.npz``."""
    path = artifact_path(client, run, FIGURE_DATA)
    if path is None:
        raise Skip(
            f"{run.name}: no {FIGURE_DATA} (trained before runs logged it): "
            f"`python ablations/per_query.py` adds it"
        )
    try:
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise Skip(f"{run.name}: {FIGURE_DATA} does not read ({str(err)[:120]})") from None


def query_data(cfg: Config) -> DatasetSplits:
    """The run's dataset, for the rank lists' images (synthetic data regenerates
    deterministically); relative roots are taken from the repository root."""
    data = cfg.data
    if not Path(data.root).is_absolute():
        from dataclasses import replace

        data = replace(data, root=str(REPO / data.root))
    try:
        return load_splits(data)
    except FTNError as err:
        raise Skip(f"dataset {data.dataset} not readable under {data.root} ({err})") from None


CMAP = "jet"
MAP_ALPHA = 0.45


def _overlay(
    ax: plt.Axes,
    img: np.ndarray,
    act: np.ndarray | None,
    title: str,
    mask: np.ndarray | None = None,
) -> None:
    """img (H, W, 3) uint8; act (h, w) drawn bilinearly over it, min-max scaled; mask (H, W)
    outlined in white."""
    h, w = img.shape[:2]
    ax.imshow(img, interpolation="none")
    if act is not None:
        act = act.astype(np.float64)
        span = max(float(act.max() - act.min()), 1e-12)
        ax.imshow(
            (act - act.min()) / span,
            cmap=CMAP,
            vmin=0,
            vmax=1,
            alpha=MAP_ALPHA,
            interpolation="bilinear",
            extent=(-0.5, w - 0.5, h - 0.5, -0.5),
        )
    if mask is not None:
        ax.contour(mask, levels=[0.5], colors="white", linewidths=0.8)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _colour_bar(fig: plt.Figure, axes) -> None:
    """The one colour bar of the overlays (each map min-max scaled over its image)."""
    bar = fig.colorbar(
        ScalarMappable(Normalize(0, 1), CMAP),
        ax=axes,
        location="bottom",
        shrink=0.8,
        aspect=30,
        pad=0.02,
        alpha=MAP_ALPHA,
    )
    bar.set_label("activation, min–max scaled per image", fontsize=7)
    bar.set_ticks([0, 0.5, 1], labels=["min", "", "max"])
    bar.ax.tick_params(labelsize=7)


def uniform_share(mask: np.ndarray | None, i: int) -> float | None:
    """Percent of image ``i``'s pixels inside its person mask: the fg of a uniform map."""
    return None if mask is None else 100.0 * float((mask[i] > 0).mean())


def _input_title(name: str, mask: np.ndarray | None, i: int) -> str:
    share = uniform_share(mask, i)
    return name if share is None else f"{name}\nuniform {share:.0f} %"


def _focus_title(name: str, data: dict[str, np.ndarray], key: str, i: int) -> str:
    fg = data.get(key)
    return name if fg is None else f"{name}\nfg {float(fg[i]):.0f} %"


MASK_NOTE = (
    "fg = share of the map's mass inside the person mask (white outline); uniform = a flat map's fg"
)


def figure_stage3_vs_cfa(data: dict[str, np.ndarray], label: str, stem: Path) -> list[Path]:
    """Paper Fig. 4: stage 3 vs CFA activation maps of three pedestrians."""
    if "ped_attn" not in data:
        raise Skip(f"{label} has no attention module")
    img, mask = data["ped_img"], data.get("ped_mask")
    fig, axes = plt.subplots(
        len(img), 3, figsize=(3.8, 2.3 * len(img) + 0.9), squeeze=False, layout="constrained"
    )
    for i in range(len(img)):
        m = mask[i] if mask is not None else None
        _overlay(axes[i, 0], img[i], None, _input_title("input", mask, i), m)
        _overlay(
            axes[i, 1],
            img[i],
            data["ped_stage3"][i],
            _focus_title("stage 3", data, "ped_fg_stage3", i),
            m,
        )
        _overlay(
            axes[i, 2],
            img[i],
            data["ped_attn"][i],
            _focus_title("CFA (A′)", data, "ped_fg_attn", i),
            m,
        )
    _colour_bar(fig, axes)
    note = f"\n{wrap(MASK_NOTE, 50)}" if mask is not None else ""
    fig.suptitle(f"Stage 3 vs CFA — {wrap(label, 50)}{note}", fontsize=7)
    return save(fig, stem, palette=False)  # photos under heat maps: full colour


def figure_global_local(models: dict[str, dict[str, np.ndarray]], stem: Path) -> list[Path]:
    """Paper Fig. 5: global / local branch maps of one identity across cameras, per model (each
    model's ``figure_data``: the same identity, as the runs share their test split)."""
    models = {name: d for name, d in models.items() if "id_img" in d}
    if not models:
        raise Skip("the dataset has no test identities")
    first = next(iter(models.values()))
    img, mask, cams = first["id_img"], first.get("id_mask"), first["id_camid"]
    cols = ["input"] + [f"{name} {b}" for name in models for b in ("global", "local")]
    fig, axes = plt.subplots(
        len(img),
        len(cols),
        squeeze=False,
        layout="constrained",
        figsize=(1.25 * len(cols), 2.3 * len(img) + 0.9),
    )
    for j, (name, d) in enumerate(models.items()):
        for i in range(len(img)):
            m = mask[i] if mask is not None else None
            if j == 0:
                _overlay(
                    axes[i, 0], img[i], None, _input_title(f"cam {int(cams[i]) + 1}", mask, i), m
                )
            for k, b in enumerate(("global", "local")):
                _overlay(
                    axes[i, 1 + 2 * j + k],
                    img[i],
                    d[f"id_{b}"][i],
                    _focus_title(f"{name}\n{b}", d, f"id_fg_{b}", i),
                    m,
                )
    _colour_bar(fig, axes)
    note = f"\n{MASK_NOTE}" if mask is not None else ""
    fig.suptitle(
        f"Global and local branches, identity {int(first['id_pid'][0])} in "
        f"{len(img)} cameras{note}",
        fontsize=7,
    )
    return save(fig, stem, palette=False)  # photos under heat maps: full colour


def figure_reconstructions(models: dict[str, dict[str, np.ndarray]], stem: Path) -> list[Path]:
    """TF-Dec: input, masked target and reconstruction for each variant with a decoder (an
    ``oracle`` target without person masks logged none, and its row is left out)."""
    models = {k: d for k, d in models.items() if "rec_output" in d}
    if not models:
        raise Skip("no variant has a TF-Dec decoder")
    n = len(next(iter(models.values()))["rec_img"])
    fig, axes = plt.subplots(
        len(models), 3 * n, figsize=(0.95 * 3 * n, 1.9 * len(models)), squeeze=False
    )
    for r, (name, d) in enumerate(models.items()):
        for i in range(n):
            for c, title in enumerate(("input", "target", "output")):
                x = d[f"rec_{'img' if title == 'input' else title}"][i]
                _overlay(axes[r, 3 * i + c], x, None, title if r == 0 else "")
        axes[r, 0].text(
            -0.15,
            0.5,
            name,
            transform=axes[r, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=8,
        )
    fig.suptitle("TF-Dec reconstructions (input, masked target, output)", fontsize=8)
    fig.tight_layout()
    return save(fig, stem, palette=False)  # photos under heat maps: full colour
