"""Reconstruction targets of TF-Dec (paper §3.1, Table 2).

Target = (un-normalised input in [0, 1]) ⊙ (product of the strategy's masks), always
detached: the target never receives gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Which masks each Table 2 strategy multiplies into the target.
STRATEGY_MASKS: dict[str, tuple[str, ...]] = {
    "input": (),
    "gm": ("gm",),
    "gm_pam": ("gm", "pam"),
    "gm_cam": ("gm", "cam"),
    "gm_pam_cam": ("gm", "pam", "cam"),
    "oracle": ("truth",),  # a control: the ground-truth person mask (synthetic data only)
}


def gaussian_mask(
    height: int,
    width: int,
    sy: float = 0.5,
    sx: float = 0.35,
    device: torch.device | str | None = None,
) -> Tensor:
    """Gm: a 2-D Gaussian centred on the crop, peak 1, σ_y = sy·H, σ_x = sx·W. → (H, W).

    The paper gives no σ; the defaults are ours and the Optuna study tunes them.
    """
    y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5 - height / 2) / (
        sy * height
    )
    x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5 - width / 2) / (sx * width)
    return torch.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))  # (H, W)


def attention_mask(attn: Tensor, size: tuple[int, int], eps: float = 1e-6) -> Tensor:
    """PAm / CAm: channel-mean of |attn|, bilinearly upsampled, min-max normalised per image.

    attn: (B, D, h, w) → mask (B, 1, H, W) in [0, 1], detached.
    """
    with torch.no_grad():
        m = attn.detach().float().abs().mean(dim=1, keepdim=True)  # (B, 1, h, w)
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)  # (B, 1, H, W)
        flat = m.flatten(1)  # (B, H·W)
        lo = flat.amin(dim=1).view(-1, 1, 1, 1)
        hi = flat.amax(dim=1).view(-1, 1, 1, 1)
        return ((m - lo) / (hi - lo).clamp_min(eps)).clamp_(0, 1)


def reconstruction_target(
    img: Tensor,
    strategy: str,
    pa: Tensor | None = None,
    ca: Tensor | None = None,
    sy: float = 0.5,
    sx: float = 0.35,
    truth: Tensor | None = None,
) -> Tensor:
    """img (B, 3, H, W) in [0, 1] ⊙ the strategy's masks → target (B, 3, H, W), detached.

    ``truth`` (B, 1, H, W) in {0, 1}: the ground-truth person mask, for ``oracle`` only.
    """
    if strategy not in STRATEGY_MASKS:
        raise ValueError(f"unknown mask strategy {strategy!r}; one of {', '.join(STRATEGY_MASKS)}")
    h, w = img.shape[-2:]
    target = img.detach()
    for name in STRATEGY_MASKS[strategy]:
        if name == "gm":
            mask = gaussian_mask(h, w, sy, sx, device=img.device).to(img.dtype)  # (H, W)
        elif name == "truth":
            if truth is None:
                raise ValueError(
                    "mask strategy 'oracle' needs the ground-truth person masks "
                    "(synthetic data only)"
                )
            mask = truth.detach().to(img.dtype)  # (B, 1, H, W)
        else:
            attn = pa if name == "pam" else ca
            if attn is None:
                raise ValueError(
                    f"mask strategy {strategy!r} needs the CFA's {name[:2].upper()} map"
                )
            mask = attention_mask(attn, (h, w)).to(img.dtype)  # (B, 1, H, W)
        target = target * mask
    return target.detach()
