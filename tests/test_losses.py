"""Losses against values worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from ftn_core.losses import batch_hard_triplet, combine, cross_entropy, gradient_loss, l1_loss


def test_triplet_hand_computed():
    # 1-D features: ids 0 at 0 and 1, id 1 at 3 and 7.
    feat = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # anchor 0: d_ap = 1, d_an = 3 → [0.3 + 1 − 3]_+ = 0
    # anchor 1: d_ap = 1, d_an = 2 → 0
    # anchor 3 (=3.0): d_ap = 4, d_an = 2 → 0.3 + 4 − 2 = 2.3
    # anchor 7: d_ap = 4, d_an = 6 → 0
    loss = batch_hard_triplet(feat, pids, margin=0.3)
    assert loss.item() == pytest.approx(2.3 / 4, abs=1e-5)


def test_triplet_2d_hand_computed_and_gradient():
    feat = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [6.0, 8.0]], requires_grad=True)
    pids = torch.tensor([0, 0, 1, 1])
    # anchor 0: d_ap = 5, d_an = min(1, 10) = 1 → 0.3 + 4 = 4.3
    # anchor 1: d_ap = 5, d_an = min(|(3,3)|, 5) = 4.2426 → 0.3 + 5 − 4.2426 = 1.0574
    # anchor 2: d_ap = |(6,7)| = 9.2195, d_an = 1 → 8.5195
    # anchor 3: d_ap = 9.2195, d_an = 5 → 4.5195
    expected = (4.3 + (5.3 - math.sqrt(18)) + (math.sqrt(85) - 0.7) + (math.sqrt(85) - 4.7)) / 4
    loss = batch_hard_triplet(feat, pids, margin=0.3)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    loss.backward()
    assert torch.isfinite(feat.grad).all()


def test_triplet_zero_when_margin_satisfied():
    feat = torch.tensor([[0.0], [0.1], [10.0], [10.1]])
    assert batch_hard_triplet(feat, torch.tensor([0, 0, 1, 1])).item() == 0.0


def test_gradient_loss_hand_computed():
    # One 1×2×3 image; target is zero, so the loss is the reconstruction's own maps.
    recon = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])
    target = torch.zeros_like(recon)
    # G^h: (1−0)², (3−1)², (2−2)², (2−2)² = 1, 4, 0, 0 → sum 5, mean 1.25
    # G^v: (2−0)², (2−1)², (2−3)² = 4, 1, 1 → sum 6, mean 2.0
    assert gradient_loss(recon, target, "paper").item() == pytest.approx(11.0)  # Eq. 2: Σ per image
    assert gradient_loss(recon, target).item() == pytest.approx(11.0)  # paper is the default
    assert gradient_loss(recon, target, "mean").item() == pytest.approx(3.25)
    # A constant offset changes no gradient: loss 0 against the shifted copy.
    assert gradient_loss(recon + 0.5, recon).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="reduction"):
        gradient_loss(recon, target, "sum")


def test_eq2_sums_over_each_image_and_averages_over_the_batch():
    a = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])
    b = torch.tensor([[[[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]]]])
    # b: G^h = 0, 0, 4, 4 → 8; G^v = 1, 1, 1 → 3; so Σ = 11 as for a.
    batch, zero = torch.cat([a, b, torch.zeros_like(a)]), torch.zeros(3, 1, 2, 3)
    # Eq. 2: (1/B) Σ_i ‖G(recon_i) − G(target_i)‖₁ = (11 + 11 + 0) / 3, whatever the image size.
    assert gradient_loss(batch, zero, "paper").item() == pytest.approx(22 / 3)
    # mean = paper ÷ the elements of each map (4 horizontal, 3 vertical per image).
    assert gradient_loss(batch, zero, "mean").item() == pytest.approx((5 + 8) / 12 + (6 + 3) / 9)
    # L1 the same way: Σ|a| = 10 and Σ|b| = 5 per image → (10 + 5 + 0) / 3.
    assert l1_loss(batch, zero, "paper").item() == pytest.approx(5.0)
    assert l1_loss(batch, zero, "mean").item() == pytest.approx(15 / 18)


def test_l1_and_ce_and_combine():
    recon = torch.tensor([[[[0.5, 1.0]]]])
    assert l1_loss(recon, torch.zeros_like(recon), "mean").item() == pytest.approx(0.75)
    assert l1_loss(recon, torch.zeros_like(recon)).item() == pytest.approx(1.5)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    # softmax = (1/4, 3/4); CE for class 1 = −log(3/4)
    assert cross_entropy(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))
    # with smoothing ε = 0.2 over 2 classes: 0.9·(−log 3/4) + 0.1·(−log 1/4)
    smoothed = cross_entropy(logits, torch.tensor([1]), label_smooth=0.2).item()
    assert smoothed == pytest.approx(-0.9 * math.log(0.75) - 0.1 * math.log(0.25))
    terms = {
        "ce/global": torch.tensor(2.0),
        "ce/local": torch.tensor(1.0),
        "triplet/global": torch.tensor(4.0),
        "grad": torch.tensor(8.0),
        "l1": torch.tensor(16.0),
    }
    assert combine(terms, {"ce": 1, "triplet": 0.1, "grad": 0, "l1": 0}).item() == pytest.approx(
        3.4
    )
    assert combine(terms, {"ce": 0, "triplet": 0, "grad": 1, "l1": 1}).item() == pytest.approx(24.0)
    with pytest.raises(ValueError, match="no loss term"):
        combine({"grad": torch.tensor(1.0)}, {"ce": 1})
