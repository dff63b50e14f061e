"""The mix reader: a small network that reads the breed weights of one of the prior's own latents in one pass.

Why: ancestry is maximum likelihood under the diffusion prior (``model/latent_ops.py``), and scoring every breed's
condition costs denoiser passes by the hundred. The reader is an amortised answer to the same question (amortised
inference, Kingma & Welling 2014; here over the breed weights): trained on latents the checkpoint's own sampler drew
for known mixes (``training/reader.py``), it predicts the weights ``w`` from ``z``, and ancestry spends the denoiser
only on its few best breeds. It is a shortlist, not the answer: the likelihood still picks and weighs them.

A convolutional encoder at the latent's resolution, two stride-2 downsamplings, global average pooling and a linear
read-out to breed logits; its softmax is the predicted weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from model.layers import ResidualBlock, group_norm


@dataclass
class ReaderConfig:
    """The reader's architecture. Stored verbatim in the checkpoint card."""

    channels: int = 32  # at the latent's resolution; doubled at each of the two downsamplings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReaderConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**data)


class MixReader(nn.Module):
    """Latents z (n, latent_dim) -> breed logits (n, n_breeds); softmax gives the predicted mix weights."""

    def __init__(self, cfg: ReaderConfig, n_breeds: int, latent_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.cfg, self.shape = cfg, latent_shape
        latent_dim, c = math.prod(latent_shape), cfg.channels
        # The prior's standardisation, copied at training: the reader reads the numbers the denoiser reads.
        self.register_buffer("z_mean", torch.zeros(latent_dim))
        self.register_buffer("z_scale", torch.ones(latent_dim))
        self.net = nn.Sequential(
            nn.Conv2d(latent_shape[0], c, 3, padding=1),
            ResidualBlock(c),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
            ResidualBlock(2 * c),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1),
            ResidualBlock(4 * c),
            group_norm(4 * c),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * c, n_breeds),
        )

    def forward(self, z: Tensor) -> Tensor:
        x = ((z - self.z_mean) / self.z_scale).view(len(z), *self.shape)
        return self.net(x)

    def weights(self, z: Tensor) -> Tensor:
        """Predicted breed weights (n, n_breeds) on the simplex."""
        return self.forward(z).softmax(-1)
