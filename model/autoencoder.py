"""The first stage: a breed-conditional VAE (encoder, decoder, breed head) and its per-breed latent Gaussians.

Why it looks like this
----------------------
A plain convolutional VAE on photos of many breeds puts little breed information in its latent, so breeds can
neither be sampled, mixed nor identified in it. This model separates *what breed* from *which photo*:

* ``z``: pose, framing, background, lighting, individual colouring, from ``q(z | x) = N(mu(x), diag(exp(log_var(x))))``.
  With ``latent_channels = C > 0`` it is *spatial* (a C-channel map at the encoder's last resolution, as in the
  VQGAN / Stable Diffusion autoencoders): each number describes one region of the photo, which keeps detail.
* ``y``, a point on the breed simplex, enters the decoder as ``e(y) = sum_b y_b E_b`` (learned breed embeddings)
  through FiLM at every resolution. One-hot ``y`` is a pure breed; any other point is a mix.
* ``q(y | x)``: a separate convolutional breed head, with its own trunk so its gradient is not drowned by the pixels.
* The pixel likelihood is a Gaussian with a learned per-channel scale (the sigma-VAE of Rybkin et al.).

This is Kingma et al.'s M2 model with the label always observed (a conditional VAE, Sohn et al.) plus an auxiliary
classifier. After training, a full-covariance Gaussian per breed is fitted to the posterior means of its photos
(ex-post density estimation, Ghosh et al. 2020) and kept as buffers: they give the closed-form densities behind
identification from ``z`` and the ancestry's fit score, and are the simplest prior to sample from
(:class:`model.prior.GaussianPrior`). Losses live in ``training/losses.py``; the learned prior in
``model/diffusion.py``; the operations built on both in ``model/latent_ops.py``.

References: Kingma & Welling (ICLR 2014); Kingma et al., "Semi-Supervised Learning with Deep Generative Models"
(NeurIPS 2014); Sohn et al. (NeurIPS 2015); Perez et al., "FiLM" (AAAI 2018); Rybkin et al., "Simple and Effective
VAE Training with Calibrated Decoders" (ICML 2021); Ghosh et al., "From Variational to Deterministic Autoencoders"
(ICLR 2020).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from model.layers import ResidualBlock, group_norm


@dataclass
class VAEConfig:
    """The autoencoder's architecture and pixel likelihood. Stored verbatim in the checkpoint card."""

    n_breeds: int = 28
    image_size: int = 64  # must be divisible by 2 ** len(channels)
    latent_dim: int = 128  # with latent_channels > 0: latent_channels * latent_side ** 2
    latent_channels: int = 0  # 0: z is one vector; C > 0: a spatial latent of C channels
    breed_embed_dim: int = 64  # 0: the decoder gets no breed (the plain-VAE baseline)
    channels: tuple[int, ...] = (32, 64, 128, 256)  # per stride-2 stage of the encoder/decoder
    classifier_channels: tuple[int, ...] = (32, 64, 128, 256)
    classifier_dropout: float = 0.3
    classifier_image_size: int = 0  # the side the breed head reads photos at; 0: image_size
    # One covariance for every breed's latent Gaussian (the pooled one) instead of one each: per-breed factors cost
    # n_breeds * latent_dim^2 floats, 503 MB for 120 breeds of 1,024 numbers.
    shared_covariance: bool = False
    learned_pixel_scale: bool = True  # sigma-VAE; if False the scale is fixed at pixel_scale
    pixel_scale: float = 0.1
    min_log_pixel_scale: float = -4.0  # floor so the likelihood cannot diverge on flat images

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.classifier_channels = tuple(self.classifier_channels)
        if self.image_size % (2 ** len(self.channels)) != 0:
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**{len(self.channels)}")
        if self.latent_channels and self.latent_dim != self.latent_channels * self.latent_side**2:
            raise ValueError(
                f"a spatial latent of {self.latent_channels} channels at {self.latent_side}x{self.latent_side} "
                f"has latent_dim {self.latent_channels * self.latent_side**2}, got {self.latent_dim}"
            )

    @property
    def head_size(self) -> int:
        """Side of the images the breed head reads (fully convolutional, so any side works; it was trained at this)."""
        return self.classifier_image_size or self.image_size

    @property
    def photo_size(self) -> int:
        """Side to decode a photo at, for both the encoder and the breed head."""
        return max(self.image_size, self.head_size)

    @property
    def latent_side(self) -> int:
        """Side of the encoder's last feature map (and of a spatial latent)."""
        return self.image_size // 2 ** len(self.channels)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """z viewed as a feature map: (C, side, side), or (latent_dim, 1, 1) for a vector latent."""
        if self.latent_channels:
            return (self.latent_channels, self.latent_side, self.latent_side)
        return (self.latent_dim, 1, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**data)


class Encoder(nn.Module):
    """x -> (mu, log_var) of q(z | x)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, ch in enumerate(cfg.channels):
            layers.append(nn.Conv2d(in_ch, ch, 4, stride=2, padding=1))
            if i >= len(cfg.channels) - 2:  # residual refinement only at the cheap low resolutions
                layers.append(ResidualBlock(ch))
            else:
                layers.append(nn.SiLU())
            in_ch = ch
        self.trunk = nn.Sequential(*layers, group_norm(in_ch), nn.SiLU())
        self.spatial = cfg.latent_channels > 0
        if self.spatial:
            self.to_stats: nn.Module = nn.Conv2d(in_ch, 2 * cfg.latent_channels, 3, padding=1)
        else:
            self.to_stats = nn.Linear(in_ch * cfg.latent_side**2, 2 * cfg.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x * 2 - 1)
        if self.spatial:  # (B, 2C, s, s) -> two (B, C*s*s), channel-major like Tensor.flatten
            mu, log_var = (t.flatten(1) for t in self.to_stats(h).chunk(2, dim=1))
        else:
            mu, log_var = self.to_stats(h.flatten(1)).chunk(2, dim=1)
        return mu, log_var.clamp(-12.0, 6.0)


class Decoder(nn.Module):
    """(z, breed embedding) -> mean image in [0, 1]."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        chans = list(reversed(cfg.channels))
        self.side = cfg.latent_side
        cond = cfg.breed_embed_dim
        self.first_channels = chans[0]
        self.latent_channels = cfg.latent_channels
        if self.latent_channels:  # the breed enters through FiLM only; z is already a feature map
            self.from_latent: nn.Module = nn.Conv2d(cfg.latent_channels, chans[0], 3, padding=1)
        else:
            self.from_latent = nn.Linear(cfg.latent_dim + cond, chans[0] * self.side * self.side)
        self.blocks = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, ch in enumerate(chans):
            out_ch = chans[i + 1] if i + 1 < len(chans) else chans[-1] // 2
            self.blocks.append(ResidualBlock(ch, cond_dim=cond) if i < len(chans) - 1 else nn.Identity())
            self.ups.append(nn.ConvTranspose2d(ch, out_ch, 4, stride=2, padding=1))
        self.head = nn.Sequential(nn.SiLU(), nn.Conv2d(chans[-1] // 2, 3, 3, padding=1))

    def forward(self, z: Tensor, breed_embedding: Tensor) -> Tensor:
        if self.latent_channels:
            h = self.from_latent(z.view(-1, self.latent_channels, self.side, self.side))
        else:
            h = self.from_latent(torch.cat([z, breed_embedding], dim=1))
            h = h.view(-1, self.first_channels, self.side, self.side)
        for block, up in zip(self.blocks, self.ups, strict=True):
            h = block(h, breed_embedding) if isinstance(block, ResidualBlock) else block(h)
            h = up(F.silu(h))
        return torch.sigmoid(self.head(h))


class BreedHead(nn.Module):
    """q(y | x): a small CNN classifier with its own trunk."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, ch in enumerate(cfg.classifier_channels):
            layers += [nn.Conv2d(in_ch, ch, 3, stride=2, padding=1), group_norm(ch), nn.SiLU()]
            if i > 0:  # no residual block at the first, most expensive resolution
                layers.append(ResidualBlock(ch))
            in_ch = ch
        self.trunk = nn.Sequential(*layers, group_norm(in_ch), nn.SiLU())
        self.dropout = nn.Dropout(cfg.classifier_dropout)
        self.fc = nn.Linear(in_ch, cfg.n_breeds)

    def features(self, x: Tensor) -> Tensor:
        """(n, 3, S, S) images in [0, 1] -> (n, channels) pooled features, what the breed logits are read from."""
        return self.trunk(x * 2 - 1).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.features(x)))


class BreedVAE(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.breed_head = BreedHead(cfg)
        self.breed_embeddings = nn.Parameter(torch.randn(cfg.n_breeds, cfg.breed_embed_dim) * 0.5)
        self.log_pixel_scale = nn.Parameter(
            torch.full((3,), math.log(cfg.pixel_scale)), requires_grad=cfg.learned_pixel_scale
        )
        # Per-breed mean and Cholesky factor of the aggregate posterior (Ghosh et al.): one factor per breed, or one
        # for all (shared_covariance). N(0, I) for every breed until `fit_latent_gaussians` runs at the end of
        # training (the plain baseline never runs it).
        factors = 1 if cfg.shared_covariance else cfg.n_breeds
        eye = torch.eye(cfg.latent_dim).expand(factors, -1, -1).clone()
        self.register_buffer("prior_mean", torch.zeros(cfg.n_breeds, cfg.latent_dim))
        self.register_buffer("prior_cholesky", eye)
        self.register_buffer("pooled_cholesky", torch.eye(cfg.latent_dim))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)

    def breed_logits(self, x: Tensor) -> Tensor:
        return self.breed_head(x)

    def embed_breeds(self, breed_weights: Tensor) -> Tensor:
        """(B, n_breeds) simplex weights -> (B, breed_embed_dim) decoder conditioning."""
        return breed_weights @ self.breed_embeddings

    def decode(self, z: Tensor, breed_weights: Tensor) -> Tensor:
        return self.decoder(z, self.embed_breeds(breed_weights))

    def pixel_log_scale(self) -> Tensor:
        return self.log_pixel_scale.clamp(min=self.cfg.min_log_pixel_scale)

    @torch.no_grad()
    def fit_latent_gaussians(self, means: Tensor, breeds: Tensor, shrinkage: float = 0.5) -> None:
        """Fit per-breed full-covariance Gaussians to posterior means (Ghosh et al. 2020).

        Each breed's covariance is shrunk towards the pooled within-breed covariance so that small
        breeds (200 photos for 512 dimensions) still get a well-conditioned estimate.
        """
        n, d = means.shape
        eps = 1e-4 * torch.eye(d, dtype=torch.float64)
        means64 = means.double()
        centred = torch.empty_like(means64)
        breed_means = torch.zeros(self.cfg.n_breeds, d, dtype=torch.float64)
        for b in range(self.cfg.n_breeds):
            rows = breeds == b
            if rows.any():
                breed_means[b] = means64[rows].mean(0)
                centred[rows] = means64[rows] - breed_means[b]
        pooled = centred.T @ centred / max(n - 1, 1) + eps
        self.pooled_cholesky.copy_(torch.linalg.cholesky(pooled).float())
        self.prior_mean.copy_(breed_means.float())
        if self.cfg.shared_covariance:
            self.prior_cholesky[0] = self.pooled_cholesky
            return
        for b in range(self.cfg.n_breeds):
            rows = breeds == b
            count = int(rows.sum())
            if count < 2:
                cov = pooled
            else:
                c = centred[rows]
                cov = (1 - shrinkage) * (c.T @ c / (count - 1)) + shrinkage * pooled + eps
            self.prior_cholesky[b] = torch.linalg.cholesky(cov).float()

    def mixed_cholesky(self, weights: Tensor) -> Tensor:
        """L(w) = sum_b w_b L_b for weights (..., n_breeds) -> (..., d, d)."""
        if self.cfg.shared_covariance:
            return weights.sum(-1)[..., None, None] * self.prior_cholesky[0]
        return torch.einsum("...b,bij->...ij", weights, self.prior_cholesky)

    def gaussian_log_density(self, z: Tensor, weights: Tensor) -> Tensor:
        """log N(z; mean(w), L(w) L(w)^T) for one latent z (d,) and weights (k, n_breeds) -> (k,), where
        mean(w) = sum_b w_b mu_b and L(w) = sum_b w_b L_b. Differentiable in ``weights``."""
        mean = weights @ self.prior_mean
        cholesky = self.mixed_cholesky(weights)
        diff = (z[None] - mean).unsqueeze(-1)
        whitened = torch.linalg.solve_triangular(cholesky, diff, upper=False).squeeze(-1)
        log_det = cholesky.diagonal(dim1=-2, dim2=-1).abs().clamp_min(1e-12).log().sum(-1)
        return -0.5 * whitened.pow(2).sum(-1) - log_det - 0.5 * z.numel() * math.log(2 * math.pi)
