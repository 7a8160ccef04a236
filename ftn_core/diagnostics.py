"""Foreground diagnostics on data with person masks (the paper's Figures 4–5 as numbers).

Two questions, each answered per query image and averaged:

- **Where does a feature map look?** ``normalised_focus``: the share of the map's activation
  mass inside the person, rescaled so that a uniform map scores 0 and the best map the
  map's resolution allows scores 100 (a raw share cannot be compared across stages: a 4×2 map
  cannot put its mass on a centred person at all).
- **Do the masks of TF-Dec's target find the person?** ``mask_auc``: the pixel ROC AUC of a
  soft mask (Gm, PAm, CAm, their product) against the ground-truth person mask; 0.5 is chance.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import Tensor

from ftn_core.evaluation import activation_map, foreground_focus
from ftn_core.masks import attention_mask, gaussian_mask


def _upsample(act: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) → (B, H, W), bilinear as ``foreground_focus`` does."""
    return F.interpolate(act[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def best_focus(masks: Tensor, map_size: tuple[int, int]) -> Tensor:
    """The highest foreground share any non-negative ``map_size`` map reaches: (B,).

    The share Σ_j a_j·in_j / Σ_j a_j·all_j of a map a ≥ 0 (in_j, all_j: the person and total
    mass of cell j's bilinear footprint) is a ratio of linear functions, so its maximum is at
    a single cell: max_j in_j / all_j. masks: (B, [1,] H, W), > 0 = person.
    """
    if masks.ndim == 4:
        masks = masks[:, 0]
    h, w = map_size
    basis = _upsample(torch.eye(h * w).view(h * w, h, w), masks.shape[-2:]).clamp_min(0)  # (h·w, H, W)
    person = (masks > 0).float()  # (B, H, W)
    inside = torch.einsum("bhw,nhw->bn", person, basis)  # (B, h·w)
    return (inside / basis.sum(dim=(1, 2))[None]).amax(dim=1)


def normalised_focus(act: Tensor, masks: Tensor) -> Tensor:
    """Foreground focus rescaled per image: 0 = uniform map, 100 = best map at this resolution.

    act: (B, h, w) activation map; masks: (B, [1,] H, W). Below 0 means the map prefers the
    background. Images whose person fills every cell's footprint equally give NaN.
    """
    if masks.ndim == 4:
        masks = masks[:, 0]
    share = foreground_focus(act, masks)  # (B,)
    uniform = (masks > 0).float().mean(dim=(1, 2))  # a uniform map's share = the person's area
    best = best_focus(masks, tuple(act.shape[-2:]))
    span = best - uniform
    return torch.where(span > 1e-6, 100.0 * (share - uniform) / span, torch.full_like(share, float("nan")))


def mask_auc(scores: Tensor, masks: Tensor) -> Tensor:
    """Pixel ROC AUC of soft masks against person masks, per image: (B,), NaN if one class is empty.

    scores: (B, [1,] H, W), higher = more person; masks: (B, [1,] H, W), > 0 = person. Ties
    count one half (the Mann–Whitney U statistic with average ranks, scipy's ``rankdata``).
    """
    s = scores.detach().float().reshape(scores.shape[0], -1).cpu().numpy()  # (B, H·W)
    pos = (masks.reshape(masks.shape[0], -1) > 0).cpu().numpy()  # (B, H·W)
    ranks = rankdata(s, axis=1)
    n_pos = pos.sum(axis=1)
    n_neg = pos.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return torch.from_numpy(np.where((n_pos > 0) & (n_neg > 0), auc, np.nan))


def soft_masks(enc_attn, size: tuple[int, int], sy: float, sx: float, batch: int) -> dict[str, Tensor]:
    """The masks TF-Dec's targets are built from, each (B, 1, H, W): gm always; pam, cam and
    their product with gm (``gm_pam_cam``) when the attention module gives PA / CA maps."""
    gm = gaussian_mask(*size, sy, sx).expand(batch, 1, *size)
    out = {"gm": gm}
    if enc_attn is not None and enc_attn.pa is not None:
        out["pam"] = attention_mask(enc_attn.pa, size).cpu()
    if enc_attn is not None and enc_attn.ca is not None:
        out["cam"] = attention_mask(enc_attn.ca, size).cpu()
    if "pam" in out and "cam" in out:
        out["gm_pam_cam"] = gm * out["pam"] * out["cam"]
    return out


@torch.no_grad()
def foreground_scores(model, img: Tensor, masks: Tensor) -> dict[str, Tensor]:
    """Per-image diagnostics of one batch, each (B,) on the CPU, in percent:

    ``fg_focus_<map>`` (raw share) and ``fg_focus_norm_<map>`` for the maps of
    ``FTN.activation_maps`` (stage3, stage4, attn, global = stage 5, local), and
    ``mask_auc_<mask>`` for ``soft_masks``. img: (B, 3, H, W) in [0, 1]; masks: (B, 1, H, W).
    """
    enc = model.forward_encoder(img)
    masks = masks.cpu()
    out: dict[str, Tensor] = {}
    for name, fmap in model.activation_maps(img, enc).items():
        act = activation_map(fmap.float()).cpu()  # (B, h, w)
        out[f"fg_focus_{name}"] = 100.0 * foreground_focus(act, masks)
        out[f"fg_focus_norm_{name}"] = normalised_focus(act, masks)
    soft = soft_masks(enc.attn, tuple(img.shape[-2:]), model.gauss_sy, model.gauss_sx, img.shape[0])
    for name, m in soft.items():
        out[f"mask_auc_{name}"] = 100.0 * mask_auc(m, masks)
    return out
