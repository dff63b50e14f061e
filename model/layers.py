"""Building blocks shared by the autoencoder and the latent denoiser."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4), channels)


class ResidualBlock(nn.Module):
    """3x3 conv residual block; optionally FiLM-conditioned (feature-wise scale and shift) on a vector."""

    def __init__(self, channels: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = group_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * channels) if cond_dim else None

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None:
            scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return x + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the positions of a feature map, residual (the output starts at zero)."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} attention heads")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).view(n, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (n, heads, h*w, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


def time_features(t: Tensor, n: int = 64) -> Tensor:
    """(m,) diffusion times in [0, 1] -> (m, n) sinusoidal features (Vaswani et al.'s position encoding of 1000 t)."""
    half = n // 2
    freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(1000.0) / half))
    angles = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)
