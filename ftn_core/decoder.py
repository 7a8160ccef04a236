"""TF-Dec, the texture-focused decoder (paper §3.1, Fig. 2), discarded at inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MSRB(nn.Module):
    """Multi-scale residual block of MSRN (Li et al. 2018), used in every up block of TF-Dec.

    Parallel 3×3 and 5×5 convs (n→n, ReLU), concatenated; again 3×3 and 5×5 (2n→2n, ReLU),
    concatenated; a 1×1 fusion 4n→n; plus the input.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        n = channels
        self.conv3_1 = nn.Conv2d(n, n, 3, padding=1)
        self.conv5_1 = nn.Conv2d(n, n, 5, padding=2)
        self.conv3_2 = nn.Conv2d(2 * n, 2 * n, 3, padding=1)
        self.conv5_2 = nn.Conv2d(2 * n, 2 * n, 5, padding=2)
        self.fuse = nn.Conv2d(4 * n, n, 1)

    def forward(self, x: Tensor) -> Tensor:
        s1 = torch.cat([F.relu(self.conv3_1(x)), F.relu(self.conv5_1(x))], dim=1)  # (B, 2n, h, w)
        s2 = torch.cat([F.relu(self.conv3_2(s1)), F.relu(self.conv5_2(s1))], dim=1)  # (B, 4n, h, w)
        return self.fuse(s2) + x


class UpBlock(nn.Module):
    """One ×2 up block: MSRB → 3×3 conv n→4n → PixelShuffle(2).

    Interpretation: the paper lists PixelShuffle, 3×3 conv and MSRB without an
    order; MSRN's own order runs the MSRB before upsampling (≈9.4 GMAC per 256×128 image at
    width 64 instead of ≈31 GMAC the other way round).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.msrb = MSRB(channels)
        self.expand = nn.Conv2d(channels, 4 * channels, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.expand(self.msrb(x)))  # (B, n, h, w) → (B, n, 2h, 2w)


class TFDec(nn.Module):
    """Head (1×1 conv C→n), body (4 up blocks, ×16 in all), tail (3×3 conv n→3).

    Takes the stage-4 map (B, C, H/16, W/16) to an RGB image (B, 3, H, W). The output is
    linear (no sigmoid), as in MSRN; targets are images in [0, 1].
    """

    def __init__(self, in_channels: int, width: int = 64, num_up: int = 4) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, width, 1)
        self.body = nn.Sequential(*[UpBlock(width) for _ in range(num_up)])
        self.tail = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, feat: Tensor) -> Tensor:
        """feat: (B, C, h, w) → recon (B, 3, 16h, 16w)."""
        return self.tail(self.body(self.head(feat)))
