"""The learned latent prior: a breed-conditional denoising diffusion model on the first stage's latents.

Why: a spatial latent keeps far more detail than one vector, but its aggregate posterior is too rich for a Gaussian
(its samples decode to texture soup). This is the latent-diffusion recipe (Rombach et al. 2022) at toy scale: a
convolutional denoiser at the latent's resolution (``blocks`` FiLM residual blocks, with ``attention`` a
self-attention layer after every second one), conditioned on the diffusion time and on the breed weights ``y``
through a linear embedding, so a mix of breeds is a well-defined condition. Continuous time, cosine schedule,
v-prediction (Salimans & Ho 2022); the condition is dropped (``y = 0``) for a share of training batches, which gives
classifier-free guidance (Ho & Salimans 2022). Latents are standardised per dimension (buffers ``z_mean``,
``z_scale``) before the denoiser sees them. Sampling is in ``model/sampler.py``; the training loss in
``training/losses.py``.

References: Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models" (CVPR 2022); Ho et al.,
"Denoising Diffusion Probabilistic Models" (NeurIPS 2020); Nichol & Dhariwal, "Improved DDPM" (ICML 2021, cosine
schedule); Salimans & Ho, "Progressive Distillation" (ICLR 2022, v-prediction); Li et al., "Your Diffusion Model is
Secretly a Zero-Shot Classifier" (ICCV 2023, the denoising error as a class score).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.layers import ResidualBlock, SelfAttention, group_norm, time_features


@dataclass
class DiffusionConfig:
    """The denoiser's architecture. Stored verbatim in the checkpoint card."""

    channels: int = 128
    blocks: int = 6  # residual blocks, all at the latent's resolution
    # A self-attention layer after every second block: every latent position sees the whole dog at once
    # (convolutions alone need many blocks to connect head and tail, and samples grew extra heads).
    attention: bool = False
    # The denoiser works on patch x patch cells of the latent (DiT's patch size, Peebles & Xie 2023): a 16x16x4
    # latent at patch 2 is 8x8 cells of 16 numbers, a quarter of the positions and a sixteenth of the attention.
    patch: int = 1

    def __post_init__(self) -> None:
        if self.patch < 1:
            raise ValueError(f"patch must be at least 1, got {self.patch}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        data = dict(data)
        # Cards of 2026-12 store photo_dim 0 (a photo-conditioned prior, tried and removed: docs/experiments.md).
        if data.pop("photo_dim", 0):
            raise ValueError("a denoiser conditioned on photo embeddings (photo_dim) is no longer supported")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**data)


class LatentDiffusion(nn.Module):
    """The denoiser v(x_t, t, y) on standardised latents, and the forward (noising) process."""

    TIME_FEATURES = 64

    def __init__(self, cfg: DiffusionConfig, n_breeds: int, latent_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.shape = latent_shape
        latent_dim = math.prod(latent_shape)
        self.register_buffer("z_mean", torch.zeros(latent_dim))
        self.register_buffer("z_scale", torch.ones(latent_dim))
        ch = cfg.channels
        self.time_mlp = nn.Sequential(nn.Linear(self.TIME_FEATURES, ch), nn.SiLU(), nn.Linear(ch, ch))
        self.breed_embedding = nn.Linear(n_breeds, ch, bias=False)
        channels, height, width = latent_shape
        if height % cfg.patch or width % cfg.patch:
            raise ValueError(f"a {height}x{width} latent does not split into {cfg.patch}x{cfg.patch} patches")
        cell = channels * cfg.patch**2  # numbers per cell the denoiser sees
        self.conv_in = nn.Conv2d(cell, ch, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualBlock(ch, cond_dim=ch) for _ in range(cfg.blocks))
        self.attention = nn.ModuleDict(
            {str(i): SelfAttention(ch) for i in range(1, cfg.blocks, 2)} if cfg.attention else {}
        )
        self.conv_out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, cell, 3, padding=1))
        nn.init.zeros_(self.conv_out[-1].weight)
        nn.init.zeros_(self.conv_out[-1].bias)

    @property
    def n_breeds(self) -> int:
        return self.breed_embedding.in_features

    @torch.no_grad()
    def fit_standardisation(self, latents: Tensor) -> None:
        self.z_mean.copy_(latents.mean(0))
        self.z_scale.copy_(latents.std(0).clamp_min(1e-6))

    def standardise(self, z: Tensor) -> Tensor:
        return (z - self.z_mean) / self.z_scale

    @staticmethod
    def alpha_sigma(t: Tensor) -> tuple[Tensor, Tensor]:
        """Cosine schedule (Nichol & Dhariwal 2021): signal and noise scales at time t in [0, 1]."""
        angle = (t.clamp(0.0, 1.0) * 0.985 + 0.008) / 1.008 * math.pi / 2  # keeps both scales away from 0
        return torch.cos(angle), torch.sin(angle)

    def velocity(self, x_t: Tensor, t: Tensor, breed_weights: Tensor) -> Tensor:
        """(n, latent_dim) noisy standardised latents, (n,) times, (n, n_breeds) -> the predicted v."""
        cond = self.time_mlp(time_features(t, self.TIME_FEATURES)) + self.breed_embedding(breed_weights)
        x = x_t.view(-1, *self.shape)
        if self.cfg.patch > 1:
            x = F.pixel_unshuffle(x, self.cfg.patch)
        h = self.conv_in(x)
        for i, block in enumerate(self.blocks):
            h = block(h, cond)
            if str(i) in self.attention:
                h = self.attention[str(i)](h)
        v = self.conv_out(h)
        if self.cfg.patch > 1:
            v = F.pixel_shuffle(v, self.cfg.patch)
        return v.flatten(1)

    def noised(self, x: Tensor, t: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Standardised latents x at times t with noise eps -> (x_t, the velocity v the denoiser should predict)."""
        alpha, sigma = (s[:, None] for s in self.alpha_sigma(t))
        return alpha * x + sigma * eps, alpha * eps - sigma * x

    def denoising_error(self, z: Tensor, breed_weights: Tensor, probes: int = 32) -> Tensor:
        """How badly the denoiser recovers one latent z (d,) under each condition (m, n_breeds) -> (m,).

        The score of a diffusion classifier (Li et al. 2023): the mean squared v-prediction error, an evenly
        weighted form of the conditional ELBO, so a lower error means a likelier condition. Every condition
        sees the same ``probes`` evenly spaced times and the same noise (a fixed seed): the comparison is
        paired and deterministic. Differentiable in ``breed_weights``.
        """
        x = self.standardise(z.to(self.z_mean))
        t = (torch.arange(probes, device=x.device) + 0.5) / probes
        eps = torch.randn(probes, x.numel(), generator=torch.Generator().manual_seed(0)).to(x)
        x_t, v = self.noised(x.expand(probes, -1), t, eps)
        m = len(breed_weights)
        predicted = self.velocity(x_t.repeat(m, 1), t.repeat(m), breed_weights.repeat_interleave(probes, 0))
        return (predicted - v.repeat(m, 1)).pow(2).mean(1).view(m, probes).mean(1)
