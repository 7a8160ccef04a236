"""Attention modules of Table 1: the paper's CFA (§3.2, Fig. 3) and ABD-Net's PAM-CAM."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttentionOut(NamedTuple):
    out: Tensor
    """A′, same shape as the input A: (B, C, h, w)."""
    pa: Tensor | None
    """Position attention map PA (B, D, h, w), or None when the module has none."""
    ca: Tensor | None
    """Channel attention map CA (B, D, h, w), or None when the module has none."""


def channel_max_pool(x: Tensor, n: int = 2) -> Tensor:
    """CMP (§3.2): max over each run of ``n`` adjacent channels. (B, C, h, w) → (B, C/n, h, w)."""
    b, c, h, w = x.shape
    if c % n:
        raise ValueError(f"channel max pooling needs C divisible by n, got C={c}, n={n}")
    return x.view(b, c // n, n, h, w).amax(dim=2)  # (B, C/n, n, h, w) → (B, C/n, h, w)


class CFA(nn.Module):
    """Compact Foreground Attention (paper §3.2, Eq. 1, Fig. 3).

    B = CMP(A); Q, K, V = 1×1 convs of B; Q̂, K̂ = ReLU(BN(·)); X = softmax(Q̂K̂ᵀ) (D×D),
    S = softmax(Q̂ᵀK̂) (N×N); CA = XV, PA = VSᵀ; B′ = γ·CA + φ·PA + B; A′ = Conv1×1(BN(B′)).
    Interpretation: Eq. 1's sum over i is read as the element-wise sum of the three maps.
    """

    def __init__(
        self,
        in_channels: int,
        use_pa: bool = True,
        use_ca: bool = True,
        use_cmp: bool = True,
        pool: int = 2,
    ) -> None:
        super().__init__()
        if in_channels % pool:
            raise ValueError(f"CFA needs in_channels divisible by {pool}, got {in_channels}")
        d = in_channels // pool
        self.use_pa, self.use_ca, self.use_cmp, self.pool = use_pa, use_ca, use_cmp, pool
        self.query = nn.Conv2d(d, d, 1)
        self.key = nn.Conv2d(d, d, 1)
        self.value = nn.Conv2d(d, d, 1)
        self.bn_q = nn.BatchNorm2d(d)
        self.bn_k = nn.BatchNorm2d(d)
        self.gamma = nn.Parameter(torch.zeros(1))  # weight of CA
        self.phi = nn.Parameter(torch.zeros(1))  # weight of PA
        self.recover = nn.Sequential(nn.BatchNorm2d(d), nn.Conv2d(d, in_channels, 1))
        # "w/o CMP": a 1×1 convolution does the channel reduction instead of max pooling. Built
        # last, so the modules every CFA row has draw the same initial weights in all of them.
        self.reduce = None if use_cmp else nn.Conv2d(in_channels, d, 1, bias=False)

    def zero_init_output(self) -> None:
        """Zero the recover convolution, so A′ = 0 at initialisation (``residual`` placement)."""
        nn.init.zeros_(self.recover[1].weight)
        nn.init.zeros_(self.recover[1].bias)

    def forward(self, a: Tensor) -> AttentionOut:
        """a: (B, C, h, w) → AttentionOut(A′ (B, C, h, w), PA, CA (B, D, h, w))."""
        b = channel_max_pool(a, self.pool) if self.reduce is None else self.reduce(a)
        bsz, d, h, w = b.shape
        q = F.relu(self.bn_q(self.query(b))).flatten(2)  # (B, D, N)
        k = F.relu(self.bn_k(self.key(b))).flatten(2)  # (B, D, N)
        v = self.value(b).flatten(2)  # (B, D, N)
        out = b
        ca = pa = None
        if self.use_ca:
            x_aff = torch.softmax(q @ k.transpose(1, 2), dim=-1)  # (B, D, D)
            ca = (x_aff @ v).view(bsz, d, h, w)  # (B, D, N) → (B, D, h, w)
            out = out + self.gamma * ca
        if self.use_pa:
            s_aff = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (B, N, N)
            pa = (v @ s_aff.transpose(1, 2)).view(bsz, d, h, w)  # (B, D, N) → (B, D, h, w)
            out = out + self.phi * pa
        return AttentionOut(self.recover(out), pa, ca)


class _PositionAttention(nn.Module):
    """DANet's position attention module: Q, K to C/8, softmax over N×N, γ·out + x."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels // 8, 1)
        self.key = nn.Conv2d(channels, channels // 8, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        bsz, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        k = self.key(x).flatten(2)  # (B, C/8, N)
        attn = torch.softmax(q @ k, dim=-1)  # (B, N, N)
        v = self.value(x).flatten(2)  # (B, C, N)
        out = (v @ attn.transpose(1, 2)).view(bsz, c, h, w)  # (B, C, N) → (B, C, h, w)
        return self.gamma * out + x


class _ChannelAttention(nn.Module):
    """DANet's channel attention module: no convolutions, C×C affinity, γ·out + x."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        bsz, c, h, w = x.shape
        flat = x.flatten(2)  # (B, C, N)
        energy = flat @ flat.transpose(1, 2)  # (B, C, C)
        # DANet subtracts the energy from its row max before the softmax.
        attn = torch.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1)
        out = (attn @ flat).view(bsz, c, h, w)  # (B, C, N) → (B, C, h, w)
        return self.gamma * out + x


class PAMCAM(nn.Module):
    """ABD-Net's attention as the paper describes it for Table 1 (§3.2).

    3×3 conv C→C/2 + BN + ReLU; DANet position (PAM) and channel (CAM) attention in parallel,
    their outputs summed with the reduced input; a 3×3 conv restores C channels.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        mid = in_channels // 2
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.pam = _PositionAttention(mid)
        self.cam = _ChannelAttention()
        self.restore = nn.Conv2d(mid, in_channels, 3, padding=1)

    def zero_init_output(self) -> None:
        """Zero the restoring convolution, so A′ = 0 at initialisation (``residual`` placement)."""
        nn.init.zeros_(self.restore.weight)
        nn.init.zeros_(self.restore.bias)

    def forward(self, a: Tensor) -> AttentionOut:
        """a: (B, C, h, w) → AttentionOut(A′ (B, C, h, w), None, None)."""
        x = self.reduce(a)
        return AttentionOut(self.restore(self.pam(x) + self.cam(x) + x), None, None)
