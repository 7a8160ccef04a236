"""Losses of FTN (paper §3.3–3.4, Eq. 2–6)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, pids: Tensor, label_smooth: float = 0.0) -> Tensor:
    """Identity classification loss L_CE; label smoothing is off by default (the paper has none)."""
    return F.cross_entropy(logits, pids, label_smoothing=label_smooth)


def pairwise_euclidean(feat: Tensor) -> Tensor:
    """(B, D) → (B, B) Euclidean distances, with a floor so the sqrt has a gradient at 0."""
    sq = feat.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * feat @ feat.t()  # (B, B)
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet(feat: Tensor, pids: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017; paper Eq. 5), averaged over anchors.

    For each anchor: hardest positive = farthest same-id sample, hardest negative = nearest
    other-id sample; loss = mean of [margin + d_ap − d_an]_+. Eq. 5 sums over anchors; the mean
    only rescales λ2.
    """
    dist = pairwise_euclidean(feat.float())  # (B, B)
    same = pids[:, None] == pids[None, :]  # (B, B)
    d_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    d_an = dist.masked_fill(same, float("inf")).amin(dim=1)
    return F.relu(margin + d_ap - d_an).mean()


def image_gradients(img: Tensor) -> tuple[Tensor, Tensor]:
    """Squared forward differences (Eq. 3–4): G^h (B, C, H, W−1) and G^v (B, C, H−1, W)."""
    gh = (img[..., :, 1:] - img[..., :, :-1]).pow(2)
    gv = (img[..., 1:, :] - img[..., :-1, :]).pow(2)
    return gh, gv


def _reduce(per_element: Tensor, reduction: str) -> Tensor:
    """(B, ...) → scalar: per-image sum then batch mean (``paper``, Eq. 2), or the mean of all
    elements (``mean``, = ``paper`` ÷ the elements per image)."""
    if reduction == "paper":
        return per_element.flatten(1).sum(1).mean()
    if reduction == "mean":
        return per_element.mean()
    raise ValueError(f"unknown reduction {reduction!r}; use 'paper' or 'mean'")


def gradient_loss(recon: Tensor, target: Tensor, reduction: str = "paper") -> Tensor:
    """L_gradient (Eq. 2): L1 between the gradient maps of the reconstruction and the target.

    ``paper``: Σ over each image's map elements of |G^h_r − G^h_t| + |G^v_r − G^v_t|, averaged
    over the batch — Eq. 2 as printed (‖·‖₁ per image, ÷ batch size). ``mean`` averages over the
    elements of each map as well. Eq. 3–4 as printed sum each map to a scalar; we keep the maps
    (the text calls them matrices).
    """
    rh, rv = image_gradients(recon.float())
    th, tv = image_gradients(target.float())
    if reduction == "mean":  # each direction's map averaged on its own (they differ in size)
        return (rh - th).abs().mean() + (rv - tv).abs().mean()
    return _reduce((rh - th).abs(), reduction) + _reduce((rv - tv).abs(), reduction)


def l1_loss(recon: Tensor, target: Tensor, reduction: str = "paper") -> Tensor:
    """L_L1 between reconstruction and target. The paper leaves its normalisation open; ``paper``
    uses Eq. 2's (sum over each image, mean over the batch), ``mean`` the element mean."""
    return _reduce((recon.float() - target.float()).abs(), reduction)


# Names of the four terms of Eq. 6, in order, and the λ of each batch kind (§3.4).
TERMS = ("ce", "triplet", "grad", "l1")


def combine(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """L_FTN = Σ λ_t · L_t (Eq. 6) over the terms present; a term whose weight is 0 is left out.

    ``terms`` may hold several entries per term kind (one per branch), keyed ``"ce/global"``
    etc.: the weight is looked up by the part before the slash.
    """
    total: Tensor | None = None
    for key, value in terms.items():
        w = weights.get(key.split("/")[0], 0.0)
        if w:
            total = w * value if total is None else total + w * value
    if total is None:
        raise ValueError(
            f"no loss term has a non-zero weight (terms {list(terms)}, weights {weights})"
        )
    return total
