"""The breed-conditional VAE behind vae-dogs, in one file.

Design (why it looks like this)
-------------------------------
A plain convolutional VAE on photos of many breeds puts little breed information in its latent
(measured in issue 7: 12 % top-1 from the latent), so breeds can neither be sampled, mixed nor
identified in it. This model therefore separates *what breed* from *which photo*:

* ``z`` (``latent_dim``): pose, framing, background, lighting, individual colouring. Encoded by
  ``q(z | x) = N(mu(x), diag(exp(log_var(x))))`` with a standard normal prior during training.
* ``y`` (a point on the breed simplex): the breed, fed to the decoder as a convex combination of
  learned breed embeddings, ``e(y) = sum_b y_b E_b``. One-hot ``y`` is a pure breed; any other point
  of the simplex is a mix, so "mix beagle 70 % / samoyed 30 %" is a well-defined decoder input.
* ``p(x | z, y)``: the decoder, conditioned on ``e(y)`` at every resolution through FiLM
  (feature-wise scale and shift), so the breed cannot be ignored by the upper layers.
* ``q(y | x)``: a separate convolutional breed head. Its own trunk keeps the classification
  gradient from being drowned by the ~10^4-nat pixel term (the failure reported in issue 7).

This is the M2 model of Kingma et al. with the label always observed, i.e. a conditional VAE
(Sohn et al.) plus an auxiliary classifier. The pixel likelihood is a Gaussian with a learned
per-channel scale (the sigma-VAE of Rybkin et al.), which sets the reconstruction/KL balance by
maximum likelihood instead of a hand-tuned beta; ``beta`` and a KL warm-up remain explicit knobs.

Sampling uses ex-post density estimation (Ghosh et al.): after training, a full-covariance
Gaussian is fitted to the posterior means of each breed's training photos (shrunk towards the
pooled covariance) and stored in the checkpoint as buffers. Sampling breed ``b`` draws ``z`` from
that Gaussian, which avoids the "prior hole" of ``N(0, I)`` on diverse photos.

The default checkpoint keeps detail and samples from a learned prior. Its ``z`` is *spatial*
(``latent_channels = 8``: an 8x8 map of 8 channels, 512 numbers, each describing one region of the photo,
as in the VQGAN / Stable Diffusion autoencoders), which reconstructs far more sharply than one 128-number
vector. Such a latent is too rich for a Gaussian or an MLP VAE to sample from (both decode to soup), so
samples come from a small breed-conditional diffusion model on the latents (``LatentDiffusion``: the
latent-diffusion recipe of Rombach et al. at toy scale), trained after stage 1 by
``python -m training.prior --kind diffusion`` and sampled with classifier-free guidance (rescaled, Lin et al.) plus
autoguidance by a weaker second denoiser (``BreedVAE.guide_prior``; the default's has the main one's architecture and an
eighth of its training steps). An MLP second-stage VAE on the latents (``LatentPrior``, Dai & Wipf) is the other choice, for vector latents.
In both cases the Gaussians stay for the closed-form densities (identification from ``z``, the ancestry's fit
score); a diffusion prior also answers ancestry itself, its denoising error standing in for the likelihood of a
breed mix (``LatentDiffusion.denoising_error``).

Training has two stages. Stage 1 maximises the ELBO above. A VAE decoder trained only on the pixel
likelihood decodes prior samples to breed-independent blur ("texture soup": issue 7), because the
aggregate posterior of diverse photos does not fill the prior and the pixel term rewards the mean of
all plausible images. Stage 2 (``adversarial_loss``) therefore keeps the encoder, breed head and
ex-post prior fixed and fine-tunes the decoder as the generator of a VAE-GAN (Larsen et al.): it must
still reconstruct photos, and both its reconstructions and its decodes of prior samples of breed ``b``
must pass a projection discriminator ``D(x, b)`` as real photos *of breed b*. Unlike a frozen breed
classifier (tried first; the decoder learned textures that fooled it), the discriminator keeps learning,
so the decoder can only satisfy it by drawing breed-typical colour and shape. The latent
operations built on these pieces (sample, mix, identify, transfer, ancestry) live in
``model/latent_ops.py``.

References
----------
- Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
- Kingma, Rezende, Mohamed & Welling, "Semi-Supervised Learning with Deep Generative Models", NeurIPS 2014 (M2).
- Sohn, Lee & Yan, "Learning Structured Output Representation using Deep Conditional Generative Models", NeurIPS 2015.
- Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018.
- Rybkin, Daniilidis & Levine, "Simple and Effective VAE Training with Calibrated Decoders", ICML 2021.
- Ghosh et al., "From Variational to Deterministic Autoencoders", ICLR 2020 (ex-post density estimation).
- Dai & Wipf, "Diagnosing and Enhancing VAE Models", ICLR 2019 (two-stage VAE).
- Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022.
- Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020; Song, Meng & Ermon, "Denoising Diffusion
  Implicit Models", ICLR 2021 (DDIM); Nichol & Dhariwal, "Improved DDPM", ICML 2021 (cosine schedule).
- Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022 (v-prediction);
  Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022.
- Li et al., "Your Diffusion Model is Secretly a Zero-Shot Classifier", ICCV 2023 (denoising error as a class score).
- Karras et al., "Guiding a Diffusion Model with a Bad Version of Itself", NeurIPS 2024 (autoguidance).
- Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed", WACV 2024 (guidance rescale).
- Kim et al., "Refining Generative Process with Discriminator Guidance in Score-based Diffusion Models", ICML 2023.
- Larsen et al., "Autoencoding beyond pixels using a learned similarity metric", ICML 2016 (VAE-GAN).
- Esser, Rombach & Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021 (adaptive GAN weight).
- Miyato et al., "Spectral Normalization for GANs", ICLR 2018; Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018.
- Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016 (KL warm-up).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class VAEConfig:
    """Architecture and ELBO weighting. Stored verbatim in the checkpoint card."""

    n_breeds: int = 28
    image_size: int = 64  # 64 or 128; must be divisible by 2 ** len(channels) * 4
    latent_dim: int = 128
    # 0: z is one vector, reached through a linear layer from the encoder's last feature map (the first
    # default). C > 0: z is that feature map's resolution with C channels (a spatial latent, as in the
    # SD / VQGAN autoencoders), flattened to latent_dim = C * side * side numbers; each latent number then
    # describes one image region, which keeps detail the single vector loses (issue 7: blur).
    latent_channels: int = 0
    breed_embed_dim: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 256)  # per stride-2 stage of the VAE encoder/decoder
    classifier_channels: tuple[int, ...] = (32, 64, 128, 256)
    classifier_dropout: float = 0.3
    # loss = pixel_nll + beta * warmup(step) * KL + breed_weight * CE(q(y|x), y)
    #        + generated_breed_weight * CE(q(y | decode(z ~ N(0, I), y)), y)
    beta: float = 1.0
    breed_weight: float = 1.0  # the breed head has its own trunk, so no balancing against pixels
    # Breed consistency of generated images: decode z ~ N(0, I) with a random breed and ask the (frozen)
    # breed head to recognise that breed. Forces the decoder to use the breed embedding instead of
    # letting z carry everything (cf. the classifier loss of CVAE-GAN, Bao et al. 2017).
    generated_breed_weight: float = 3.0
    generated_fraction: float = 0.25  # share of each batch decoded from the prior for that term
    learned_pixel_scale: bool = True  # sigma-VAE; if False the scale is fixed at pixel_scale
    pixel_scale: float = 0.1
    min_log_pixel_scale: float = -4.0  # floor so the likelihood cannot diverge on flat images
    # "ex_post": sample z from per-breed Gaussians fitted after training; "standard": z ~ N(0, I) (a plain VAE);
    # "two_stage": z = g(u, y), u ~ N(0, I), from a second, breed-conditional VAE fitted to the latents
    # (``LatentPrior``; `python -m training.prior`). The ex-post Gaussians are fitted in every case but
    # "standard": they give the closed-form densities behind identification from z and ancestry.
    latent_prior: str = "ex_post"
    prior_noise_dim: int = 64  # size of u in the two-stage prior
    prior_hidden: int = 512  # width of its MLPs
    # z = g(u, y) + prior_residual_scale * (its learned output std) * eps. 1 is the fitted density; the mean
    # alone (0) decodes to blurry averages, the full residual partly back to soup (FID in the README).
    prior_residual_scale: float = 0.5
    # "diffusion": z from a small breed-conditional denoising diffusion model on the latents (``LatentDiffusion``;
    # `python -m training.prior --kind diffusion`), sampled with DDIM (deterministic, or with fresh noise per step:
    # ``diffusion_eta``) and classifier-free guidance.
    diffusion_channels: int = 128  # width of its convolutional denoiser
    diffusion_blocks: int = 6  # residual blocks, all at the latent's resolution
    diffusion_sampling_steps: int = 32
    diffusion_guidance: float = 2.0  # classifier-free guidance scale; 1 is the plain conditional model
    # Guidance only at diffusion times t <= this (1: at every step), after Kynkäänniemi et al. 2024 ("Applying
    # guidance in a limited interval"), where guiding the noisiest steps cost variety. On these dogs a limited
    # interval measured worse (README), so every step is guided by default.
    diffusion_guidance_max_t: float = 1.0
    # Guidance rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"):
    # the guided prediction is scaled back towards the conditional prediction's spread, by this share (0: plain
    # guidance, 1: the full spread). Strong guidance inflates the prediction; rescaled, a stronger scale keeps the
    # breed without overshooting. On these dogs it measured better at 0.5 with a higher scale (README).
    diffusion_guidance_rescale: float = 0.0
    # Every sampled standardised latent is multiplied by this before it is un-standardised (1: as sampled): below 1, a
    # truncation towards the latents' mean. The sampler's latents already have less spread than real ones (README), and
    # the decoder draws cleaner dogs from the quieter ones; measured better at 0.9 (README).
    diffusion_output_scale: float = 1.0
    # Stochasticity of the DDIM sampler (Song et al.'s eta): 0 is deterministic DDIM, 1 adds as much fresh noise
    # at each step as ancestral DDPM sampling. The fresh noise is part of a sample's starting noise (one latent's
    # worth per step after the first: ``LatentDiffusion.noise_dim``), so a seed still fixes the dog. Fresh noise
    # corrects part of the few-step sampler's error; on these dogs eta 1 at 8 steps measured better (README).
    diffusion_eta: float = 0.0
    # A self-attention layer after every second residual block: every latent position sees the whole dog at
    # once (convolutions alone need many blocks to connect head and tail, and samples grew extra heads).
    diffusion_attention: bool = False
    # Autoguidance (Karras et al. 2024): a second, weaker (smaller and/or shorter-trained) denoiser on the same
    # standardised latents (``BreedVAE.guide_prior``; 0 channels: none) whose errors are pushed away from, v = v_guide +
    # w * (v - v_guide), at every step, under the same breed condition (then classifier-free guidance on top).
    # w = diffusion_autoguidance (1: the guide is not used). Attached by `python -m training.sampling --guide-from`.
    diffusion_guide_channels: int = 0
    diffusion_guide_blocks: int = 6
    diffusion_guide_attention: bool = False
    diffusion_autoguidance: float = 1.0
    # Discriminator guidance (Kim et al. 2023): a small time- and breed-conditional classifier of noisy latents,
    # real photos' against the sampler's own (``BreedVAE.latent_discriminator``; 0 channels: none), whose logit
    # estimates log p_real(x_t) / p_sampler(x_t); its gradient, times this weight, is added to the denoiser's score
    # at every step but the first (0: unused). Trained by `python -m training.discriminator`, weighed by
    # `python -m training.sampling --discriminator-guidance`.
    diffusion_discriminator_channels: int = 0
    diffusion_discriminator_blocks: int = 4
    diffusion_discriminator_guidance: float = 0.0

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.classifier_channels = tuple(self.classifier_channels)
        if self.latent_prior not in ("ex_post", "standard", "two_stage", "diffusion"):
            raise ValueError(f"latent_prior must be 'ex_post', 'standard', 'two_stage' or 'diffusion', got {self.latent_prior!r}")
        if not (math.isfinite(self.diffusion_guidance) and self.diffusion_guidance >= 0):
            raise ValueError(f"diffusion_guidance must be a finite number of at least 0 (1: no guidance), got {self.diffusion_guidance}")
        if not (math.isfinite(self.diffusion_autoguidance) and self.diffusion_autoguidance >= 1):
            raise ValueError(f"diffusion_autoguidance must be a finite number of at least 1 (1: the guide is not used), "
                             f"got {self.diffusion_autoguidance}")
        if not (math.isfinite(self.diffusion_discriminator_guidance) and self.diffusion_discriminator_guidance >= 0):
            raise ValueError(f"diffusion_discriminator_guidance must be a finite number of at least 0 (0: unused), "
                             f"got {self.diffusion_discriminator_guidance}")
        if not (math.isfinite(self.diffusion_output_scale) and 0 < self.diffusion_output_scale <= 2):
            raise ValueError(f"diffusion_output_scale must lie in (0, 2] (1: the latents as sampled), got {self.diffusion_output_scale}")
        if not 0 <= self.diffusion_guidance_rescale <= 1:
            raise ValueError(f"diffusion_guidance_rescale must lie in [0, 1] (0: plain guidance), got {self.diffusion_guidance_rescale}")
        if not 0 <= self.diffusion_eta <= 1:
            raise ValueError(f"diffusion_eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM's noise), got {self.diffusion_eta}")
        if self.image_size % (2 ** len(self.channels)) != 0:
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**{len(self.channels)}")
        if self.latent_channels and self.latent_dim != self.latent_channels * self.latent_side ** 2:
            raise ValueError(f"a spatial latent of {self.latent_channels} channels at {self.latent_side}x{self.latent_side} "
                             f"has latent_dim {self.latent_channels * self.latent_side ** 2}, got {self.latent_dim}")

    @property
    def latent_side(self) -> int:
        """Side of the encoder's last feature map (and of a spatial latent)."""
        return self.image_size // 2 ** len(self.channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VAEConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown VAEConfig fields: {sorted(unknown)}")
        return cls(**data)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4), channels)


class ResidualBlock(nn.Module):
    """3x3 conv residual block; optionally FiLM-conditioned on a breed embedding."""

    def __init__(self, channels: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.norm1 = _norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = _norm(channels)
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
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (n, heads, h*w, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


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
        self.trunk = nn.Sequential(*layers, _norm(in_ch), nn.SiLU())
        self.spatial = cfg.latent_channels > 0
        if self.spatial:
            self.to_stats: nn.Module = nn.Conv2d(in_ch, 2 * cfg.latent_channels, 3, padding=1)
        else:
            self.to_stats = nn.Linear(in_ch * cfg.latent_side ** 2, 2 * cfg.latent_dim)

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
        for block, up in zip(self.blocks, self.ups):
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
            layers += [nn.Conv2d(in_ch, ch, 3, stride=2, padding=1), _norm(ch), nn.SiLU()]
            if i > 0:  # no residual block at the first, most expensive resolution
                layers.append(ResidualBlock(ch))
            in_ch = ch
        self.trunk = nn.Sequential(*layers, _norm(in_ch), nn.SiLU())
        self.dropout = nn.Dropout(cfg.classifier_dropout)
        self.fc = nn.Linear(in_ch, cfg.n_breeds)

    def forward(self, x: Tensor) -> Tensor:
        h = self.trunk(x * 2 - 1).mean(dim=(2, 3))
        return self.fc(self.dropout(h))


class Discriminator(nn.Module):
    """D(x, y): a projection discriminator (Miyato & Koyama) with spectral norm, used only in training.

    Real photos of breed ``y`` score high; reconstructions and prior samples decoded as breed ``y``
    score low. The projection term ``<embed(y), phi(x)>`` makes "a dog, but not of breed y" a fake,
    which is what pushes the decoder to use its breed input for prior samples. Not saved with the
    served model (it lives in the training resume state).
    """

    def __init__(self, n_breeds: int, channels: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = []
        in_ch = 3
        for ch in channels:
            layers += [sn(nn.Conv2d(in_ch, ch, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            in_ch = ch
        self.trunk = nn.Sequential(*layers)
        self.score = sn(nn.Linear(in_ch, 1))
        self.projection = sn(nn.Linear(n_breeds, in_ch, bias=False))

    def forward(self, x: Tensor, breed_weights: Tensor) -> Tensor:
        h = self.trunk(x * 2 - 1).sum(dim=(2, 3))
        return self.score(h).squeeze(1) + (self.projection(breed_weights) * h).sum(1)


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, outputs))


class StandardisedLatentModel(nn.Module):
    """Base of the learned latent priors: they see latents standardised per dimension (buffers ``z_mean``, ``z_scale``)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("z_mean", torch.zeros(latent_dim))
        self.register_buffer("z_scale", torch.ones(latent_dim))

    @torch.no_grad()
    def fit_standardisation(self, latents: Tensor) -> None:
        self.z_mean.copy_(latents.mean(0))
        self.z_scale.copy_(latents.std(0).clamp_min(1e-6))


class LatentPrior(StandardisedLatentModel):
    """p(z | y) as a second-stage VAE on the first stage's latents (Dai & Wipf, "Diagnosing and
    Enhancing VAE Models", ICLR 2019): ``z = g(u, y)`` with ``u ~ N(0, I)``.

    Why: the first stage's posteriors are narrow (median std 0.05 against a spread of ~0.9 per
    dimension), so the decoder has only learned the thin set of latents real photos occupy. A Gaussian
    fitted to them (the ex-post prior) puts most of its mass off that set, and the decoder turns those
    latents into texture soup. The second stage learns that set from the ~17k training latents and
    maps the full Gaussian ``u`` onto it. It is conditioned on the breed weights ``y`` exactly like the
    image decoder, so a mix of breeds is ``g(u, mix)`` — the same space the samples come from.
    Latents are standardised per dimension (buffers ``z_mean``, ``z_scale``) before it sees them.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__(cfg.latent_dim)
        d, b, u, h = cfg.latent_dim, cfg.n_breeds, cfg.prior_noise_dim, cfg.prior_hidden
        self.encoder = _mlp(d + b, h, 2 * u)  # q(u | z, y), needed only to train g
        self.decoder = _mlp(u + b, h, d)  # g(u, y): the mean of p(z | u, y)
        self.log_gamma = nn.Parameter(torch.zeros(()))  # log std of p(z | u, y) in standardised units, learned

    def log_output_scale(self) -> Tensor:
        """log gamma, floored so the likelihood cannot diverge once z is fitted closely."""
        return self.log_gamma.clamp(min=-6.0)

    def forward(self, u: Tensor, breed_weights: Tensor, residual: Tensor | None = None) -> Tensor:
        """(n, prior_noise_dim) noise and (n, n_breeds) simplex weights -> (n, latent_dim) latents.

        ``residual`` (n, latent_dim), already scaled, is added in standardised units times the learned
        output std: the part of z the second stage leaves to independent noise."""
        x = self.decoder(torch.cat([u, breed_weights], dim=1))
        if residual is not None:
            x = x + residual * self.log_output_scale().exp()
        return x * self.z_scale + self.z_mean

    def loss(self, z: Tensor, breed_weights: Tensor) -> tuple[Tensor, Tensor]:
        """(negative ELBO of standardised z per latent in nats, KL per latent), both batch means."""
        x = (z - self.z_mean) / self.z_scale
        mu, log_var = self.encoder(torch.cat([x, breed_weights], dim=1)).chunk(2, dim=1)
        u = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        x_hat = self.decoder(torch.cat([u, breed_weights], dim=1))
        log_gamma = self.log_output_scale()
        nll = (0.5 * (x - x_hat).pow(2) * torch.exp(-2 * log_gamma) + log_gamma + 0.5 * math.log(2 * math.pi)).sum(1)
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(1)
        return (nll + kl).mean(), kl.mean()


def time_features(t: Tensor, n: int = 64) -> Tensor:
    """(m,) diffusion times in [0, 1] -> (m, n) sinusoidal features (Vaswani et al.'s position encoding of 1000 t)."""
    half = n // 2
    freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(1000.0) / half))
    angles = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class LatentDiffusion(StandardisedLatentModel):
    """p(z | y) as a breed-conditional denoising diffusion model on the first stage's latents.

    Why: a spatial latent (``latent_channels > 0``) keeps far more detail than one vector, but its aggregate
    posterior is too rich for a Gaussian or the MLP two-stage VAE (their samples decode to soup). This is the
    latent-diffusion recipe (Rombach et al. 2022) at toy scale: a convolutional denoiser at the latent's
    resolution (``diffusion_blocks`` FiLM residual blocks, with ``diffusion_attention`` a self-attention layer
    after every second one), conditioned on the diffusion time and on the breed weights ``y`` through a
    linear embedding, so a mix of breeds is a well-defined condition.
    Training: continuous time, cosine schedule, v-prediction (Salimans & Ho 2022). The condition is
    dropped (``y = 0``, never a point of the simplex) for ``CONDITION_DROPOUT`` of the batch, which gives
    classifier-free guidance (Ho & Salimans 2022) at sampling time. Sampling is DDIM (Song et al. 2021),
    deterministic or, with ``eta > 0``, with fresh noise at every step; either way every random number comes from
    the given starting noise, so one seed gives one dog for every breed or mix (morphs keep the dog). Latents are
    standardised per dimension (buffers ``z_mean``, ``z_scale``) like ``LatentPrior``.
    """

    CONDITION_DROPOUT = 0.1
    TIME_FEATURES = 64

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__(cfg.latent_dim)
        self.shape = (cfg.latent_channels, cfg.latent_side, cfg.latent_side) if cfg.latent_channels else (cfg.latent_dim, 1, 1)
        ch, cond = cfg.diffusion_channels, cfg.diffusion_channels
        self.time_mlp = nn.Sequential(nn.Linear(self.TIME_FEATURES, cond), nn.SiLU(), nn.Linear(cond, cond))
        self.breed_embedding = nn.Linear(cfg.n_breeds, cond, bias=False)
        self.conv_in = nn.Conv2d(self.shape[0], ch, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualBlock(ch, cond_dim=cond) for _ in range(cfg.diffusion_blocks))
        self.attention = nn.ModuleDict(
            {str(i): SelfAttention(ch) for i in range(1, cfg.diffusion_blocks, 2)} if cfg.diffusion_attention else {})
        self.conv_out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, self.shape[0], 3, padding=1))
        nn.init.zeros_(self.conv_out[-1].weight)
        nn.init.zeros_(self.conv_out[-1].bias)

    @staticmethod
    def alpha_sigma(t: Tensor) -> tuple[Tensor, Tensor]:
        """Cosine schedule (Nichol & Dhariwal 2021): signal and noise scales at time t in [0, 1]."""
        angle = (t.clamp(0.0, 1.0) * 0.985 + 0.008) / 1.008 * math.pi / 2  # keeps both scales away from 0
        return torch.cos(angle), torch.sin(angle)

    def velocity(self, x_t: Tensor, t: Tensor, breed_weights: Tensor) -> Tensor:
        """The denoiser: (n, latent_dim) noisy standardised latents, (n,) times, (n, n_breeds) -> predicted v."""
        cond = self.time_mlp(time_features(t, self.TIME_FEATURES)) + self.breed_embedding(breed_weights)
        h = self.conv_in(x_t.view(-1, *self.shape))
        for i, block in enumerate(self.blocks):
            h = block(h, cond)
            if str(i) in self.attention:
                h = self.attention[str(i)](h)
        return self.conv_out(h).flatten(1)

    def noised(self, x: Tensor, t: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Standardised latents x at times t with noise eps -> (x_t, the velocity v the denoiser should predict)."""
        alpha, sigma = (s[:, None] for s in self.alpha_sigma(t))
        return alpha * x + sigma * eps, alpha * eps - sigma * x

    def loss(self, z: Tensor, breed_weights: Tensor) -> tuple[Tensor, Tensor]:
        """(mean squared v-prediction error per latent number, the same on the conditioned rows only)."""
        x = (z - self.z_mean) / self.z_scale
        t = torch.rand(len(x), device=x.device)
        x_t, v = self.noised(x, t, torch.randn_like(x))
        keep = (torch.rand(len(x), 1, device=x.device) >= self.CONDITION_DROPOUT).to(x.dtype) if self.training else 1.0
        error = (self.velocity(x_t, t, breed_weights * keep) - v).pow(2).mean(1)
        return error.mean(), error.detach().mean()

    def denoising_error(self, z: Tensor, breed_weights: Tensor, probes: int = 32) -> Tensor:
        """How badly the denoiser recovers one latent z (d,) under each condition (m, n_breeds) -> (m,).

        The score of a diffusion classifier (Li et al. 2023): the mean squared v-prediction error, an evenly
        weighted form of the conditional ELBO, so a lower error means a likelier condition. Every condition
        sees the same ``probes`` evenly spaced times and the same noise (a fixed seed): the comparison is
        paired and deterministic. Differentiable in ``breed_weights``.
        """
        x = (z.to(self.z_mean) - self.z_mean) / self.z_scale
        t = (torch.arange(probes, device=x.device) + 0.5) / probes
        eps = torch.randn(probes, x.numel(), generator=torch.Generator().manual_seed(0)).to(x)
        x_t, v = self.noised(x.expand(probes, -1), t, eps)
        m = len(breed_weights)
        predicted = self.velocity(x_t.repeat(m, 1), t.repeat(m), breed_weights.repeat_interleave(probes, 0))
        return (predicted - v.repeat(m, 1)).pow(2).mean(1).view(m, probes).mean(1)

    def noise_dim(self, steps: int, eta: float) -> int:
        """Standard normal numbers one sample starts from: the latent at t = 1, then (``eta > 0``) one latent's
        worth of fresh noise for every step but the last (which lands on t = 0 and adds none)."""
        return self.z_mean.numel() * (steps if eta > 0 else 1)

    def guided_velocity(self, x_t: Tensor, t: Tensor, breed_weights: Tensor, guide: LatentDiffusion | None,
                        autoguidance: float) -> Tensor:
        """The velocity, pushed away from a weaker ``guide``'s under the same condition (autoguidance, Karras et al.
        2024): the guide errs where this model does, only more, so the difference points away from those errors."""
        v = self.velocity(x_t, t, breed_weights)
        if guide is None or autoguidance == 1.0:
            return v
        v_guide = guide.velocity(x_t, t, breed_weights)
        return v_guide + autoguidance * (v - v_guide)

    @staticmethod
    def classifier_free(v_cond: Tensor, v_uncond: Tensor, guidance: float, rescale: float = 0.0) -> Tensor:
        """Classifier-free guidance of (n, d) velocities; ``rescale`` (Lin et al. 2024) moves each guided row by that
        share towards the same direction at the conditional row's standard deviation, which strong guidance inflates."""
        v = v_uncond + guidance * (v_cond - v_uncond)
        if rescale == 0.0:
            return v
        rescaled = v * (v_cond.std(1, keepdim=True) / v.std(1, keepdim=True).clamp_min(1e-12))
        return rescale * rescaled + (1 - rescale) * v

    def forward(self, noise: Tensor, breed_weights: Tensor, steps: int, guidance: float,
                guidance_max_t: float = 1.0, eta: float = 0.0, guide: LatentDiffusion | None = None,
                autoguidance: float = 1.0, guidance_rescale: float = 0.0,
                discriminator: LatentDiscriminator | None = None, discriminator_guidance: float = 0.0,
                output_scale: float = 1.0) -> Tensor:
        """DDIM from ``noise`` (n, noise_dim(steps, eta)) to latents z (n, latent_dim) for the weights (n, n_breeds);
        classifier-free guidance ``guidance`` at the steps that start at t <= ``guidance_max_t``; ``eta`` the share
        of DDPM's fresh noise per step (0: deterministic), taken from ``noise`` after its first latent; ``guide``
        (a weaker denoiser: smaller and/or trained less, on the same standardised latents) with weight
        ``autoguidance`` at every step; ``guidance_rescale`` see :meth:`classifier_free`; ``discriminator`` (trained on
        these standardised latents, see :class:`LatentDiscriminator`) with weight ``discriminator_guidance`` at every
        step but the first; ``output_scale`` multiplies the final standardised latent (below 1: towards the mean)."""
        if noise.shape[1] != self.noise_dim(steps, eta):
            raise ValueError(f"{steps} DDIM steps at eta {eta} start from {self.noise_dim(steps, eta)} noise numbers "
                             f"per sample, got {noise.shape[1]}")
        x, *fresh = noise.split(self.z_mean.numel(), dim=1)
        times = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
        unconditional = torch.zeros_like(breed_weights)
        guided = (times[:-1] <= guidance_max_t).tolist() if guidance != 1.0 else [False] * steps  # one device sync, not one per step
        for step, (t, t_next, cfg_step) in enumerate(zip(times[:-1], times[1:], guided)):
            tt = t.expand(len(x))
            if not cfg_step:
                v = self.guided_velocity(x, tt, breed_weights, guide, autoguidance)
            else:
                v_cond, v_uncond = self.guided_velocity(torch.cat([x, x]), torch.cat([tt, tt]),
                                                        torch.cat([breed_weights, unconditional]), guide, autoguidance).chunk(2)
                v = self.classifier_free(v_cond, v_uncond, guidance, guidance_rescale)
            alpha, sigma = self.alpha_sigma(t)
            if discriminator is not None and discriminator_guidance > 0 and step > 0:
                # The score -eps/sigma gains w * grad log(p_real / p_sampler): eps -= sigma w grad, i.e. (alpha^2 +
                # sigma^2 = 1) v -= sigma / alpha * w * grad. Not at t = 1: the latent is pure noise there, nothing to
                # tell apart, and 1 / alpha would magnify whatever the discriminator's gradient says.
                v = v - (sigma / alpha) * discriminator_guidance * discriminator.log_ratio_gradient(x, tt, breed_weights)
            x0, eps = alpha * x - sigma * v, sigma * x + alpha * v
            alpha_next, sigma_next = self.alpha_sigma(t_next)
            if eta > 0 and step < steps - 1:
                # Song et al. (2021) eq. 16 in alpha/sigma form: the fresh noise's scale, the rest keeps the predicted eps.
                fresh_scale = eta * sigma_next / sigma * (1 - (alpha / alpha_next) ** 2).clamp(min=0).sqrt()
                x = (alpha_next * x0 + (sigma_next ** 2 - fresh_scale ** 2).clamp(min=0).sqrt() * eps
                     + fresh_scale * fresh[step])
            else:
                x = alpha_next * x0 + sigma_next * eps
        return output_scale * x * self.z_scale + self.z_mean


class LatentDiscriminator(nn.Module):
    """d(x_t, t, y): is a noisy standardised latent a real photo's or the diffusion sampler's? For discriminator
    guidance (Kim et al. 2023, "Refining Generative Process with Discriminator Guidance in Score-based Diffusion Models").

    Why: the prior's samples cost most of the FID that the decoder leaves (README), and the denoiser has stopped
    improving with training on a CPU. A classifier trained to tell the latents of real photos from the sampler's,
    both noised by the forward process at a random time t, has at its optimum the logit log p_real(x_t | y) -
    log p_sampler(x_t | y); its gradient is exactly what the sampler's score lacks, so adding it (with a weight) moves
    samples towards the real latents without retraining the denoiser. Convolutional, at the latent's resolution:
    ``diffusion_discriminator_blocks`` FiLM residual blocks conditioned on t, mean-pooled, then a projection head
    (Miyato & Koyama) for the breed weights y, linear in y, so a mix of breeds is a defined condition as for the denoiser.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.shape = (cfg.latent_channels, cfg.latent_side, cfg.latent_side) if cfg.latent_channels else (cfg.latent_dim, 1, 1)
        ch = cfg.diffusion_discriminator_channels
        self.time_mlp = nn.Sequential(nn.Linear(LatentDiffusion.TIME_FEATURES, ch), nn.SiLU(), nn.Linear(ch, ch))
        self.conv_in = nn.Conv2d(self.shape[0], ch, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualBlock(ch, cond_dim=ch) for _ in range(cfg.diffusion_discriminator_blocks))
        self.features_out = nn.Sequential(_norm(ch), nn.SiLU())
        self.real = nn.Linear(ch, 1)
        self.breed_projection = nn.Linear(cfg.n_breeds, ch, bias=False)

    def forward(self, x_t: Tensor, t: Tensor, breed_weights: Tensor) -> Tensor:
        """(n, latent_dim) noisy standardised latents, (n,) times, (n, n_breeds) -> (n,) logits (real: positive)."""
        cond = self.time_mlp(time_features(t, LatentDiffusion.TIME_FEATURES))
        h = self.conv_in(x_t.view(-1, *self.shape))
        for block in self.blocks:
            h = block(h, cond)
        h = self.features_out(h).mean((2, 3))
        return self.real(h).squeeze(1) + (self.breed_projection(breed_weights) * h).sum(1)

    def log_ratio_gradient(self, x_t: Tensor, t: Tensor, breed_weights: Tensor) -> Tensor:
        """d logit / d x_t, also from inside ``torch.inference_mode`` (the service samples there)."""
        with torch.inference_mode(False), torch.enable_grad():
            x = x_t.detach().clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(self(x, t.clone(), breed_weights.clone()).sum(), x)
        return gradient


@dataclass
class LossTerms:
    loss: Tensor  # what is minimised (per image, averaged over the batch)
    pixel_nll: Tensor  # -log p(x | z, y) in nats per image
    kl: Tensor  # KL(q(z|x) || N(0, I)) in nats per image
    kl_per_dim: Tensor  # (latent_dim,) batch mean, to watch for posterior collapse
    breed_ce: Tensor
    breed_correct: Tensor  # number of top-1 hits in the batch
    mse: Tensor  # mean squared error per pixel, images in [0, 1]
    extras: dict[str, float] = field(default_factory=dict)


class BreedVAE(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.breed_head = BreedHead(cfg)
        self.breed_embeddings = nn.Parameter(torch.randn(cfg.n_breeds, cfg.breed_embed_dim) * 0.5)
        init_log_scale = math.log(cfg.pixel_scale)
        self.log_pixel_scale = nn.Parameter(
            torch.full((3,), init_log_scale), requires_grad=cfg.learned_pixel_scale
        )
        # Ex-post prior (Ghosh et al.): per-breed mean and Cholesky factor of the aggregate posterior.
        # Identity/zero until `fit_latent_prior` runs at the end of training.
        eye = torch.eye(cfg.latent_dim).expand(cfg.n_breeds, -1, -1).clone()
        self.register_buffer("prior_mean", torch.zeros(cfg.n_breeds, cfg.latent_dim))
        self.register_buffer("prior_cholesky", eye)
        self.register_buffer("pooled_cholesky", torch.eye(cfg.latent_dim))
        self.latent_prior: LatentPrior | LatentDiffusion | None = (
            LatentPrior(cfg) if cfg.latent_prior == "two_stage"
            else LatentDiffusion(cfg) if cfg.latent_prior == "diffusion" else None)
        self.guide_prior: LatentDiffusion | None = (
            LatentDiffusion(replace(cfg, diffusion_channels=cfg.diffusion_guide_channels, diffusion_blocks=cfg.diffusion_guide_blocks,
                                    diffusion_attention=cfg.diffusion_guide_attention))
            if cfg.latent_prior == "diffusion" and cfg.diffusion_guide_channels else None)
        self.latent_discriminator: LatentDiscriminator | None = (
            LatentDiscriminator(cfg) if cfg.latent_prior == "diffusion" and cfg.diffusion_discriminator_channels else None)

    # --- the pieces ----------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)

    def breed_logits(self, x: Tensor) -> Tensor:
        return self.breed_head(x)

    def embed_breeds(self, breed_weights: Tensor) -> Tensor:
        """(B, n_breeds) simplex weights -> (B, breed_embed_dim) decoder conditioning."""
        return breed_weights @ self.breed_embeddings

    def decode(self, z: Tensor, breed_weights: Tensor) -> Tensor:
        return self.decoder(z, self.embed_breeds(breed_weights))

    # --- the ELBO ------------------------------------------------------------------------
    def forward(self, x: Tensor, breeds: Tensor, kl_scale: float = 1.0) -> LossTerms:
        """The training loss; ``forward`` so that DistributedDataParallel sees it."""
        return self.loss(x, breeds, kl_scale)

    def loss(self, x: Tensor, breeds: Tensor, kl_scale: float = 1.0) -> LossTerms:
        """Negative ELBO plus the breed cross-entropy for a batch of images in [0, 1]."""
        cfg = self.cfg
        mu, log_var = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        one_hot = F.one_hot(breeds, cfg.n_breeds).to(x.dtype)
        x_hat = self.decode(z, one_hot)
        pixel_nll = gaussian_nll(x, x_hat, self.pixel_log_scale()).flatten(1).sum(1).mean()
        kl_per_dim = (0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var)).mean(0)
        kl = kl_per_dim.sum()
        logits = self.breed_logits(x)
        breed_ce = F.cross_entropy(logits, breeds, label_smoothing=0.1)
        loss = pixel_nll + cfg.beta * kl_scale * kl + cfg.breed_weight * breed_ce
        extras: dict[str, float] = {}
        # A training-only term: evaluation reports the ELBO and breed terms, so it skips this extra decode.
        use_generated = self.training and cfg.generated_breed_weight > 0
        n_generated = int(round(cfg.generated_fraction * x.shape[0])) if use_generated else 0
        if n_generated > 0:
            target = breeds[:n_generated]
            fake = self.decode(torch.randn(n_generated, cfg.latent_dim, device=x.device), one_hot[:n_generated])
            frozen = {k: v.detach() for k, v in self.breed_head.named_parameters()}
            fake_logits = torch.func.functional_call(self.breed_head, frozen, (fake,))
            generated_ce = F.cross_entropy(fake_logits, target)
            loss = loss + cfg.generated_breed_weight * generated_ce
            extras = {
                "generated_breed_ce": generated_ce.item(),
                "generated_breed_acc": (fake_logits.argmax(1) == target).float().mean().item(),
            }
        return LossTerms(
            loss=loss,
            pixel_nll=pixel_nll.detach(),
            kl=kl.detach(),
            kl_per_dim=kl_per_dim.detach(),
            breed_ce=breed_ce.detach(),
            breed_correct=(logits.argmax(1) == breeds).sum().detach(),
            mse=F.mse_loss(x_hat, x).detach(),
            extras=extras,
        )

    def adversarial_loss(self, x: Tensor, breeds: Tensor, discriminator: Callable[[Tensor, Tensor], Tensor],
                         adversarial_weight: float, prior_latents: Tensor | None = None
                         ) -> tuple[Tensor, Tensor, dict[str, float]]:
        """Decoder loss of the adversarial stage (VAE-GAN, Larsen et al.; weighting as in VQGAN, Esser et al.).

        The encoder is frozen, so ``z`` and the ex-post prior stay valid. The decoder is asked for two
        things: reconstruct the photo (per-pixel L1 + L2, so no pixel scale decides the balance) and
        make both the reconstruction and a prior sample of the same breed pass the discriminator as a
        real photo of that breed. The adversarial term's weight is set each step so that its gradient at
        the decoder's last layer has ``adversarial_weight`` times the norm of the reconstruction's.
        ``discriminator`` is any critic ``(images, breed weights) -> scores``, e.g. a :class:`Discriminator`
        behind a differentiable augmentation. Returns (loss, generated images in batch order, logs); the
        images are for the discriminator step. ``prior_latents`` (one per image of the second half) are that
        half's samples when given, e.g. from a learned latent prior; otherwise they are drawn from the
        ex-post Gaussians.
        """
        cfg = self.cfg
        half = x.shape[0] // 2  # the first half is reconstructed, the second half's breeds are sampled
        weights = F.one_hot(breeds, cfg.n_breeds).to(x.dtype)
        with torch.no_grad():
            mu, log_var = self.encode(x[:half])
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
            sampled = breeds[half:]
            if prior_latents is not None:
                if prior_latents.shape != (len(sampled), cfg.latent_dim):
                    raise ValueError(f"prior_latents: expected shape {(len(sampled), cfg.latent_dim)}, got {tuple(prior_latents.shape)}")
                z_prior = prior_latents
            else:
                eps = torch.randn(len(sampled), cfg.latent_dim, device=x.device)
                z_prior = self.prior_mean[sampled] + torch.einsum("nij,nj->ni", self.prior_cholesky[sampled], eps)
        images = self.decode(torch.cat([z, z_prior]), weights)
        recon, x = images[:half], x[:half]
        rec_loss = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        adv_loss = -discriminator(images, weights).mean()
        last = self.decoder.head[-1].weight
        rec_grad = torch.autograd.grad(rec_loss, last, retain_graph=True)[0].norm()
        adv_grad = torch.autograd.grad(adv_loss, last, retain_graph=True)[0].norm()
        balance = (rec_grad / (adv_grad + 1e-6)).clamp(0.0, 1e4).detach()
        loss = rec_loss + adversarial_weight * balance * adv_loss
        logs = {"rec_loss": rec_loss.item(), "adv_loss": adv_loss.item(), "balance": balance.item()}
        return loss, images.detach(), logs

    def pixel_log_scale(self) -> Tensor:
        return self.log_pixel_scale.clamp(min=self.cfg.min_log_pixel_scale)

    # --- the ex-post prior ---------------------------------------------------------------
    @torch.no_grad()
    def fit_latent_prior(self, means: Tensor, breeds: Tensor, shrinkage: float = 0.5) -> None:
        """Fit per-breed full-covariance Gaussians to posterior means (Ghosh et al. 2020).

        Each breed's covariance is shrunk towards the pooled within-breed covariance so that small
        breeds (200 photos for 128 dimensions) still get a well-conditioned estimate.
        """
        if self.cfg.latent_prior == "standard":  # a plain VAE samples from N(0, I): keep the identity buffers
            return
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
        for b in range(self.cfg.n_breeds):
            rows = breeds == b
            count = int(rows.sum())
            if count < 2:
                cov = pooled
            else:
                c = centred[rows]
                cov = (1 - shrinkage) * (c.T @ c / (count - 1)) + shrinkage * pooled + eps
            self.prior_cholesky[b] = torch.linalg.cholesky(cov).float()


def gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Elementwise -log N(x; mean, exp(log_scale)^2) with a per-channel scale, in nats."""
    log_scale = log_scale.view(1, -1, 1, 1)
    return 0.5 * ((x - mean) * torch.exp(-log_scale)).pow(2) + log_scale + 0.5 * math.log(2 * math.pi)
