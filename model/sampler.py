"""How the diffusion prior is sampled: the settings (a small frozen object) and the DDIM loop that takes them.

The settings are stored in the checkpoint card (``sampling``), chosen by ``python -m training.sampling`` and
overridable per call (``dataclasses.replace``) or by the service's environment; they never change the model.

* ``steps``: DDIM steps (Song et al. 2021).
* ``guidance``: classifier-free guidance scale (Ho & Salimans 2022); 1 is the plain conditional model.
* ``guidance_rescale`` (Lin et al. 2024): each guided prediction moves by this share towards the same direction at
  the conditional prediction's spread, which strong guidance inflates (0: plain guidance).
* ``eta``: DDIM's stochasticity, 0 deterministic, 1 as much fresh noise per step as ancestral DDPM. The fresh noise is
  part of a sample's starting noise, so a seed still fixes the dog.
* ``output_scale``: the sampled standardised latent is multiplied by it (below 1: a truncation towards the mean).
* ``autoguidance`` (Karras et al. 2024): with a guide (a weaker denoiser on the same latents) the velocity is
  ``v_guide + w * (v - v_guide)``, pushed away from the guide's errors (1: the guide unused).
* ``mix_strength``: a mix's weights ``w`` are scaled by ``(1 / |w|_2) ** mix_strength`` before sampling (a pure
  breed, ``|w|_2 = 1``, is unchanged). Two breeds' conditions are near orthogonal in the denoiser, so their plain
  average is a weaker condition than either (norm 0.71 for 50/50) and its dogs look like neither parent; at 2 an even
  mix of two conditions on each at full weight (docs/experiments.md).
* ``distilled``: draw with the prior's few-step student instead (``training/distill.py``: its own few deterministic
  steps of one pass each, the teacher's guidance folded in), so ``steps``, ``guidance``, ``guidance_rescale``,
  ``eta`` and ``autoguidance`` are then those the student was distilled from; ``output_scale`` still applies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor

from model import interrupt
from model.diffusion import LatentDiffusion


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 8
    guidance: float = 2.0
    guidance_rescale: float = 0.0
    eta: float = 0.0
    output_scale: float = 1.0
    autoguidance: float = 1.0
    mix_strength: float = 0.0
    distilled: bool = False

    def __post_init__(self) -> None:
        checks = {
            "steps": (self.steps == int(self.steps) and 1 <= self.steps <= 1000, "a whole number from 1 to 1000"),
            "guidance": (math.isfinite(self.guidance) and self.guidance >= 0, "at least 0 (1: no guidance)"),
            "guidance_rescale": (0 <= self.guidance_rescale <= 1, "in [0, 1] (0: plain guidance)"),
            "eta": (0 <= self.eta <= 1, "in [0, 1] (0: deterministic DDIM, 1: DDPM's noise)"),
            "output_scale": (0 < self.output_scale <= 2, "in (0, 2] (1: the latents as sampled)"),
            "autoguidance": (
                math.isfinite(self.autoguidance) and self.autoguidance >= 1,
                "at least 1 (1: the guide is not used)",
            ),
            "mix_strength": (0 <= self.mix_strength <= 4, "in [0, 4] (0: a mix's weights as given)"),
            "distilled": (self.distilled in (0, 1), "true or false (1 or 0)"),
        }
        for name, (ok, rule) in checks.items():
            if not ok:  # NaN fails every comparison, so it lands here too
                raise ValueError(f"sampler setting {name} must be {rule}, got {getattr(self, name)}")
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "distilled", bool(self.distilled))  # a settings grid passes 0.0 / 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplerSettings:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown sampler settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def noise_dim(denoiser: LatentDiffusion, settings: SamplerSettings) -> int:
    """Standard normal numbers one sample starts from: the latent at t = 1, then (``eta > 0``) one latent's worth
    of fresh noise for every step but the last (which lands on t = 0 and adds none)."""
    return denoiser.z_mean.numel() * (settings.steps if settings.eta > 0 else 1)


def mix_condition(weights: Tensor, strength: float) -> Tensor:
    """Breed weights (n, n_breeds) scaled by ``(1 / |w|_2) ** strength`` per row; an all-zero row (the
    unconditional one) and a pure breed are left as they are."""
    if strength == 0.0:
        return weights
    length = weights.norm(dim=1, keepdim=True)
    return torch.where(length > 0, weights * length.clamp_min(1e-12) ** -strength, weights)


def classifier_free(v_cond: Tensor, v_uncond: Tensor, guidance: float, rescale: float = 0.0) -> Tensor:
    """Classifier-free guidance of (n, d) velocities, with guidance rescale (Lin et al. 2024)."""
    v = v_uncond + guidance * (v_cond - v_uncond)
    if rescale == 0.0:
        return v
    rescaled = v * (v_cond.std(1, keepdim=True) / v.std(1, keepdim=True).clamp_min(1e-12))
    return rescale * rescaled + (1 - rescale) * v


def guided_velocity(
    denoiser: LatentDiffusion, x_t: Tensor, t: Tensor, weights: Tensor, guide: LatentDiffusion | None, weight: float
) -> Tensor:
    """The velocity, pushed away from a weaker ``guide``'s under the same condition (autoguidance): the guide errs
    where the denoiser does, only more, so the difference points away from those errors."""
    v = denoiser.velocity(x_t, t, weights)
    if guide is None or weight == 1.0:
        return v
    v_guide = guide.velocity(x_t, t, weights)
    return v_guide + weight * (v - v_guide)


def velocity(
    denoiser: LatentDiffusion,
    x: Tensor,
    t: Tensor,
    weights: Tensor,
    settings: SamplerSettings,
    guide: LatentDiffusion | None = None,
) -> Tensor:
    """The velocity one DDIM step follows at time ``t`` (a scalar, or one per row): the conditional prediction, with
    classifier-free guidance (one batched pass with the unconditional one) and autoguidance as ``settings`` say."""
    s = settings
    tt = t.expand(len(x))
    if s.guidance == 1.0:
        return guided_velocity(denoiser, x, tt, weights, guide, s.autoguidance)
    unconditional = torch.zeros_like(weights)
    both = guided_velocity(
        denoiser, torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([weights, unconditional]), guide, s.autoguidance
    )
    v_cond, v_uncond = both.chunk(2)
    return classifier_free(v_cond, v_uncond, s.guidance, s.guidance_rescale)


def ddim_step(denoiser: LatentDiffusion, x: Tensor, v: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
    """Deterministic DDIM from time ``t`` to ``t_next`` along the predicted velocity ``v``."""
    alpha, sigma = denoiser.alpha_sigma(t)
    alpha_next, sigma_next = denoiser.alpha_sigma(t_next)
    return alpha_next * (alpha * x - sigma * v) + sigma_next * (sigma * x + alpha * v)


def sample(
    denoiser: LatentDiffusion,
    noise: Tensor,
    weights: Tensor,
    settings: SamplerSettings,
    guide: LatentDiffusion | None = None,
) -> Tensor:
    """DDIM from ``noise`` (n, noise_dim(denoiser, settings)) to latents z (n, latent_dim) for breed weights
    (n, n_breeds); the fresh noise of ``eta > 0`` is taken from ``noise`` after its first latent."""
    s = settings
    if noise.shape[1] != noise_dim(denoiser, s):
        raise ValueError(
            f"{s.steps} DDIM steps at eta {s.eta} start from {noise_dim(denoiser, s)} noise numbers per sample, "
            f"got {noise.shape[1]}"
        )
    if s.autoguidance != 1.0 and guide is None:
        raise ValueError(f"autoguidance {s.autoguidance:g} needs a guide, and this prior has none (set it to 1)")
    x, *fresh = noise.split(denoiser.z_mean.numel(), dim=1)
    weights = mix_condition(weights, s.mix_strength)
    times = torch.linspace(1.0, 0.0, s.steps + 1, device=noise.device)
    for step, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        interrupt.check()
        v = velocity(denoiser, x, t, weights, s, guide)
        if s.eta > 0 and step < s.steps - 1:
            alpha, sigma = denoiser.alpha_sigma(t)
            x0, eps = alpha * x - sigma * v, sigma * x + alpha * v
            alpha_next, sigma_next = denoiser.alpha_sigma(t_next)
            # Song et al. (2021) eq. 16 in alpha/sigma form: the fresh noise's scale, the rest keeps the predicted eps.
            fresh_scale = s.eta * sigma_next / sigma * (1 - (alpha / alpha_next) ** 2).clamp(min=0).sqrt()
            kept = (sigma_next**2 - fresh_scale**2).clamp(min=0).sqrt()
            x = alpha_next * x0 + kept * eps + fresh_scale * fresh[step]
        else:
            x = ddim_step(denoiser, x, v, t, t_next)
    return s.output_scale * x * denoiser.z_scale + denoiser.z_mean


def edit(
    denoiser: LatentDiffusion,
    z: Tensor,
    weights: Tensor,
    settings: SamplerSettings,
    strength: float,
    noise: Tensor,
    guide: LatentDiffusion | None = None,
) -> Tensor:
    """SDEdit (Meng et al., ICLR 2022): latents z (n, latent_dim) noised with ``noise`` (n, latent_dim) to time
    ``strength``, then deterministic DDIM back to 0 under breed ``weights`` with ``settings``' guidance, in
    ``round(strength * settings.steps)`` steps (at least one). Strength 0 returns z; 1 forgets it and draws afresh;
    in between the coarse layout (pose, framing, background) survives and the breed redraws the rest."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"the edit strength must lie in [0, 1], got {strength}")
    if strength == 0.0:
        return z
    s = settings
    weights = mix_condition(weights, s.mix_strength)
    start = torch.tensor(strength, device=z.device)
    alpha, sigma = denoiser.alpha_sigma(start)
    x = alpha * denoiser.standardise(z) + sigma * noise
    steps = max(1, round(strength * s.steps))
    times = torch.linspace(strength, 0.0, steps + 1, device=z.device)
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        interrupt.check()
        x = ddim_step(denoiser, x, velocity(denoiser, x, t, weights, s, guide), t, t_next)
    return x * denoiser.z_scale + denoiser.z_mean
