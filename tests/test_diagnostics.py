"""Foreground diagnostics: normalised focus and mask AUC on maps with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from ftn_core.config import ModelConfig
from ftn_core.diagnostics import best_focus, foreground_scores, mask_auc, normalised_focus
from ftn_core.evaluation import foreground_focus
from ftn_core.model import build_model


def _person(h: int = 16, w: int = 8) -> torch.Tensor:
    """(1, 1, H, W): a centred person box covering rows 4–11 and columns 2–5."""
    m = torch.zeros(1, 1, h, w)
    m[..., 4:12, 2:6] = 1
    return m


def test_uniform_map_scores_zero_and_the_best_cell_scores_one_hundred():
    mask = _person()
    assert normalised_focus(torch.ones(1, 4, 2), mask).item() == pytest.approx(0.0, abs=1e-4)
    # The best 4×2 map is one cell; find it by brute force over the 8 one-hot maps.
    shares = []
    for j in range(8):
        act = torch.zeros(1, 8)
        act[0, j] = 1
        shares.append(foreground_focus(act.view(1, 4, 2), mask).item())
    best = max(shares)
    assert best_focus(mask, (4, 2)).item() == pytest.approx(best, abs=1e-6)
    one_hot = torch.zeros(1, 8)
    one_hot[0, shares.index(best)] = 1
    assert normalised_focus(one_hot.view(1, 4, 2), mask).item() == pytest.approx(100.0, abs=1e-3)
    # No map of that resolution scores more than 100: mixtures of cells lie in between.
    mixed = normalised_focus(torch.rand(32, 4, 2), mask.expand(32, 1, 16, 8))
    assert (mixed <= 100 + 1e-3).all()
    # A map on the background scores below 0; the raw share would not say how far from ideal.
    corner = torch.zeros(1, 4, 2)
    corner[0, 0, 0] = 1
    assert normalised_focus(corner, mask).item() < 0


def test_normalised_focus_is_nan_when_the_person_fills_the_image():
    assert math.isnan(normalised_focus(torch.rand(1, 4, 2), torch.ones(1, 1, 16, 8)).item())


def test_mask_auc_known_cases():
    truth = _person().expand(3, 1, 16, 8)
    perfect = truth * 0.9 + 0.05  # every person pixel scores above every background pixel
    inverted = 1 - perfect
    flat = torch.full_like(truth, 0.3)  # all tied: one half
    auc = mask_auc(torch.cat([perfect[:1], inverted[:1], flat[:1]]), truth)
    assert auc.tolist() == pytest.approx([1.0, 0.0, 0.5])
    # Hand-made 1×4 case: scores (0.1, 0.4, 0.35, 0.8), person at 1 and 3; of the 4
    # (person, background) pairs, 0.4 > 0.1, 0.4 > 0.35, 0.8 > both → AUC 1; swap 0.35/0.4 → 3/4.
    s = torch.tensor([[[[0.1, 0.35, 0.4, 0.8]]]])
    m = torch.tensor([[[[0.0, 1.0, 0.0, 1.0]]]])
    assert mask_auc(s, m).item() == pytest.approx(0.75)
    assert math.isnan(mask_auc(s, torch.zeros_like(m)).item())  # no person pixel


def test_foreground_scores_names_and_ranges():
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            backbone="resnet18",
            decoder_width=4,
            embed_dim=8,
            stage4_stride=1,
            last_stride=2,
            cfa_placement="series",
        ),
        num_classes=3,
    ).eval()
    img = torch.rand(2, 3, 64, 32)
    masks = torch.zeros(2, 1, 64, 32)
    masks[..., 16:48, 8:24] = 1
    scores = foreground_scores(model, img, masks)
    maps = ("stage3", "stage4", "attn", "global", "local")
    assert {f"fg_focus_norm_{m}" for m in maps} <= set(scores)
    assert {"mask_auc_gm", "mask_auc_pam", "mask_auc_cam", "mask_auc_gm_pam_cam"} <= set(scores)
    assert all(v.shape == (2,) for v in scores.values())
    # The Gaussian mask is centred: it finds a centred person better than chance.
    assert (scores["mask_auc_gm"] > 50).all() and (scores["mask_auc_gm"] <= 100).all()
    assert all(
        ((scores[f"fg_focus_{m}"] >= 0) & (scores[f"fg_focus_{m}"] <= 100)).all() for m in maps
    )
    base = build_model(
        ModelConfig(backbone="resnet18", attention="none", decoder=False, embed_dim=8),
        num_classes=3,
    ).eval()
    assert "mask_auc_pam" not in foreground_scores(base, img, masks)


def test_a_column_with_one_value_in_every_run_is_stated_once_not_repeated():
    import pandas as pd

    from reports import diagnostics_table

    summary = pd.DataFrame(
        {
            "variant": ["base", "c", "g"],
            "variant_label": ["Base.", "(c) Gm", "(g) FTN"],
            "n": [3, 3, 3],
            "auc_gm_mean": [float("nan"), 92.9, 92.9],
            "auc_gm_std": [float("nan"), 0.0, 0.0],
            "auc_pam_mean": [float("nan"), 60.0, 64.0],
            "auc_pam_std": [float("nan"), 1.0, 2.0],
        }
    )
    assert diagnostics_table.constant(summary) == {"auc_gm": 92.9}
    text = diagnostics_table.markdown(summary)
    assert "AUC PAm" in text.splitlines()[0] and "AUC Gm" not in text.splitlines()[0]
    assert text.endswith("The same in every run that logs it, so not a column: AUC Gm 92.9.")
    assert (
        "AUC Gm" in diagnostics_table.display(summary, latex=True).columns
    )  # LaTeX keeps the full table
    # One seed's std is NaN, not 0: equal means then say nothing about the runs.
    summary.loc[2, "auc_gm_std"] = float("nan")
    assert diagnostics_table.constant(summary) == {}
