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

import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import Tensor

from ftn_core.evaluation import activation_map, foreground_focus
from ftn_core.masks import attention_mask, gaussian_mask
from ftn_core.model import Encoded


def _upsample(act: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) → (B, H, W), bilinear as ``foreground_focus`` does."""
    return F.interpolate(act[:, None].float(), size=size, mode="bilinear", align_corners=False)[
        :, 0
    ]


def best_focus(masks: Tensor, map_size: tuple[int, int]) -> Tensor:
    """The highest foreground share any non-negative ``map_size`` map reaches: (B,).

    The share Σ_j a_j·in_j / Σ_j a_j·all_j of a map a ≥ 0 (in_j, all_j: the person and total
    mass of cell j's bilinear footprint) is a ratio of linear functions, so its maximum is at
    a single cell: max_j in_j / all_j. masks: (B, [1,] H, W), > 0 = person.
    """
    if masks.ndim == 4:
        masks = masks[:, 0]
    basis, total = _cell_footprints(*map_size, *masks.shape[-2:])
    person = (masks > 0).float()  # (B, H, W)
    inside = torch.einsum("bhw,nhw->bn", person, basis)  # (B, h·w)
    return (inside / total[None]).amax(dim=1)


@functools.lru_cache(maxsize=16)
def _cell_footprints(h: int, w: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Each cell's bilinear footprint (h·w, H, W) and its total mass (h·w,), once per size."""
    with torch.inference_mode(False), torch.no_grad():
        basis = _upsample(torch.eye(h * w).view(h * w, h, w), (height, width)).clamp_min(0)
        return basis, basis.sum(dim=(1, 2))


def normalised_focus(act: Tensor, masks: Tensor, share: Tensor | None = None) -> Tensor:
    """Foreground focus rescaled per image: 0 = uniform map, 100 = best map at this resolution.

    act: (B, h, w) activation map; masks: (B, [1,] H, W); ``share``: ``foreground_focus(act,
    masks)`` when the caller has it. Below 0 means the map prefers the background. Images whose
    person fills every cell's footprint equally give NaN.
    """
    if masks.ndim == 4:
        masks = masks[:, 0]
    share = foreground_focus(act, masks) if share is None else share  # (B,)
    uniform = (masks > 0).float().mean(dim=(1, 2))  # a uniform map's share = the person's area
    best = best_focus(masks, tuple(act.shape[-2:]))
    span = best - uniform
    return torch.where(
        span > 1e-6, 100.0 * (share - uniform) / span, torch.full_like(share, float("nan"))
    )


def mask_auc(scores: Tensor, masks: Tensor) -> Tensor:
    """Pixel ROC AUC of soft masks against person masks, per image: (B,), NaN if one class is empty.

    scores: (B, [1,] H, W), higher = more person; masks: (B, [1,] H, W), > 0 = person. Ties
    count one half (the Mann–Whitney U statistic with average ranks, scipy's ``rankdata``).
    """
    s = scores.detach().float().reshape(scores.shape[0], -1)  # (B, H·W)
    pos = (masks.reshape(masks.shape[0], -1) > 0).cpu().numpy()  # (B, H·W)
    if s.shape[0] > 1 and s.stride(0) == 0:  # one map expanded over the batch (Gm): rank it once
        ranks = np.broadcast_to(rankdata(s[:1].cpu().numpy(), axis=1), pos.shape)
    else:
        ranks = rankdata(s.cpu().numpy(), axis=1)
    n_pos = pos.sum(axis=1)
    n_neg = pos.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return torch.from_numpy(np.where((n_pos > 0) & (n_neg > 0), auc, np.nan))


def soft_masks(
    enc_attn, size: tuple[int, int], sy: float, sx: float, batch: int
) -> dict[str, Tensor]:
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
def forward_with_maps(model, img: Tensor) -> tuple[Tensor, Encoded, dict[str, Tensor]]:
    """One eval-mode pass of ``model(img)``: the test embedding (B, D) as it gives it, the
    encoder output and the maps of ``FTN.activation_maps`` (each (B, C, h, w)), taken by
    forward hooks on the modules that compute them, so the diagnostics cost no second pass."""
    parts = {
        "stage3": model.senc.stage3,
        "stage4": model.senc.stage4,
        "global": model.senc.stage5,
        "local": model.senc.local_block,
    }
    if model.attention is not None:
        parts["attn"] = model.attention
    seen: dict[str, list] = {name: [] for name in parts}
    handles = [
        m.register_forward_hook(lambda mod, args, out, kept=seen[name]: kept.append(out))
        for name, m in parts.items()
    ]
    try:
        feat = model(img)
    finally:
        for handle in handles:
            handle.remove()
    if model.training or any(len(v) != 1 for v in seen.values()):
        raise RuntimeError(
            "forward_with_maps needs an eval-mode model whose forward runs each of "
            f"{', '.join(parts)} once"
        )
    out = {name: v[0] for name, v in seen.items()}
    enc = Encoded(out["stage3"], out["stage4"], out.get("attn"))
    maps = {
        "stage3": enc.stage3,
        "stage4": enc.stage4,
        "global": out["global"],
        "local": out["local"],
    }
    if enc.attn is not None:
        maps["attn"] = enc.attn.out
    return feat, enc, maps


@torch.no_grad()
def foreground_scores(
    model,
    img: Tensor,
    masks: Tensor,
    enc: Encoded | None = None,
    maps: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Per-image diagnostics of one batch, each (B,) on the CPU, in percent:

    ``fg_focus_<map>`` (raw share) and ``fg_focus_norm_<map>`` for the maps of
    ``FTN.activation_maps`` (stage3, stage4, attn, global = stage 5, local), and
    ``mask_auc_<mask>`` for ``soft_masks``. img: (B, 3, H, W) in [0, 1]; masks: (B, 1, H, W).
    ``enc`` and ``maps``: ``forward_with_maps``'s for ``img`` (else an encoder pass runs here).
    """
    if enc is None or maps is None:
        enc = model.forward_encoder(img)
        maps = model.activation_maps(img, enc)
    masks = masks.cpu()
    out: dict[str, Tensor] = {}
    for name, fmap in maps.items():
        act = activation_map(fmap.float()).cpu()  # (B, h, w)
        share = foreground_focus(act, masks)  # (B,)
        out[f"fg_focus_{name}"] = 100.0 * share
        out[f"fg_focus_norm_{name}"] = normalised_focus(act, masks, share)
    soft = soft_masks(enc.attn, tuple(img.shape[-2:]), model.gauss_sy, model.gauss_sx, img.shape[0])
    for name, m in soft.items():
        out[f"mask_auc_{name}"] = 100.0 * mask_auc(m, masks)
    return out
