"""What a latent is drawn from: one small interface, two priors, and the model that pairs a prior with the VAE.

A prior answers three questions, and nothing outside this file asks which prior it is:

* ``noise_dim(settings)``: how many standard normal numbers one sample starts from (a seed fixes them);
* ``sample(noise, weights, settings, temperature)``: latents for breed weights on the simplex;
* ``log_likelihood(z, weights, probes)``: how well each breed mix explains one latent (higher is likelier,
  differentiable in the weights), the score behind ancestry; ``probes`` trades precision for speed where the score
  is an estimate (the diffusion prior's), and is ignored where it is exact.

``GaussianPrior`` is the VAE's own per-breed Gaussians (``N(0, I)`` for the plain baseline, which never fits them):
``z = mean(w) + temperature * L(w) @ eps``. ``DiffusionPrior`` is a denoiser (``model/diffusion.py``) sampled by
DDIM (``model/sampler.py``), optionally with an autoguidance guide, a distilled few-step student and a mix reader
(``model/reader.py``: ancestry's shortlist); its log-likelihood is the negative denoising error (the teacher's: the
student only learnt the teacher's sampler).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch import Tensor, nn

from model import sampler
from model.autoencoder import BreedVAE
from model.diffusion import LatentDiffusion
from model.identifier import BreedIdentifier
from model.reader import MixReader
from model.sampler import SamplerSettings


class LatentPrior(Protocol):
    kind: str

    def noise_dim(self, settings: SamplerSettings) -> int: ...

    def sample(self, noise: Tensor, weights: Tensor, settings: SamplerSettings, temperature: float = 1.0) -> Tensor: ...

    def log_likelihood(self, z: Tensor, weights: Tensor, probes: int = 32) -> Tensor: ...

    def edit(self, z: Tensor, weights: Tensor, settings: SamplerSettings, strength: float, noise: Tensor) -> Tensor:
        """Latents z (n, latent_dim) redrawn as the mix ``weights`` (``strength`` 0 keeps them, 1 redraws all)."""
        ...

    def modules(self) -> dict[str, nn.Module]:
        """Its weights, by the state-dict prefix they are stored under next to the VAE's."""
        ...


@dataclass
class GaussianPrior:
    vae: BreedVAE
    kind: str = "gaussian"

    def noise_dim(self, settings: SamplerSettings) -> int:
        return self.vae.cfg.latent_dim

    def sample(self, noise: Tensor, weights: Tensor, settings: SamplerSettings, temperature: float = 1.0) -> Tensor:
        mean = weights @ self.vae.prior_mean
        cholesky = self.vae.mixed_cholesky(weights)
        return mean + temperature * torch.einsum("nij,nj->ni", cholesky, noise)

    def log_likelihood(self, z: Tensor, weights: Tensor, probes: int = 32) -> Tensor:
        return self.vae.gaussian_log_density(z, weights)

    def edit(self, z: Tensor, weights: Tensor, settings: SamplerSettings, strength: float, noise: Tensor) -> Tensor:
        return z  # the Gaussians hold no picture of a dog to redraw towards: the decoder alone changes the breed

    def modules(self) -> dict[str, nn.Module]:
        return {}  # its buffers are the VAE's


@dataclass
class Student:
    """A denoiser distilled from the teacher's guided sampler ``teacher`` (``training/distill.py``): ``steps``
    deterministic DDIM steps of one unguided pass each land where the teacher's sampler would."""

    denoiser: LatentDiffusion
    steps: int
    teacher: SamplerSettings

    def settings(self, asked: SamplerSettings) -> SamplerSettings:
        """The plain DDIM that runs the student; of the asked settings only the output scale and the mix strength
        (the student learnt the teacher's sampler on conditions already scaled by it) apply."""
        return SamplerSettings(
            steps=self.steps, guidance=1.0, output_scale=asked.output_scale, mix_strength=asked.mix_strength
        )


@dataclass
class DiffusionPrior:
    denoiser: LatentDiffusion
    guide: LatentDiffusion | None = None  # autoguidance: a weaker denoiser on the same standardised latents
    student: Student | None = None  # settings.distilled: the few-step sampler
    reader: MixReader | None = None  # reads the weights of the sampler's own mixes from z (ancestry's shortlist)
    kind: str = "diffusion"

    def _student(self) -> Student:
        if self.student is None:
            raise ValueError(
                "distilled sampling needs a distilled student, and this prior has none "
                "(python -m training.distill makes one; or set distilled to false)"
            )
        return self.student

    def noise_dim(self, settings: SamplerSettings) -> int:
        if settings.distilled:
            student = self._student()
            return sampler.noise_dim(student.denoiser, student.settings(settings))
        return sampler.noise_dim(self.denoiser, settings)

    def sample(self, noise: Tensor, weights: Tensor, settings: SamplerSettings, temperature: float = 1.0) -> Tensor:
        noise = temperature * noise
        if settings.distilled:
            student = self._student()
            return sampler.sample(student.denoiser, noise, weights, student.settings(settings))
        return sampler.sample(self.denoiser, noise, weights, settings, self.guide)

    def edit(self, z: Tensor, weights: Tensor, settings: SamplerSettings, strength: float, noise: Tensor) -> Tensor:
        """Latents z (n, latent_dim) redrawn as the breed mix ``weights`` by SDEdit (``sampler.edit``) with the
        teacher (a distilled student only knows its own few steps from pure noise) at the teacher's settings."""
        if settings.distilled:
            settings = replace(self._student().teacher, output_scale=settings.output_scale)
        guide = self.guide if settings.autoguidance != 1.0 else None
        return sampler.edit(self.denoiser, z, weights, settings, strength, noise, guide)

    def log_likelihood(self, z: Tensor, weights: Tensor, probes: int = 32) -> Tensor:
        return -self.denoiser.denoising_error(z, weights, probes)

    def modules(self) -> dict[str, nn.Module]:
        modules = {"latent_prior": self.denoiser}
        if self.guide is not None:
            modules["guide_prior"] = self.guide
        if self.student is not None:
            modules["student_prior"] = self.student.denoiser
        if self.reader is not None:
            modules["mix_reader"] = self.reader
        return modules


IDENTIFIER_PREFIX = "identifier_head"
BREED_SPACE_PREFIX = "identifier_breed_space"


@dataclass
class DogModel:
    """The served model: the VAE, the prior its latents are drawn from, the checkpoint's sampler settings (the
    default of every sampling call; a call may pass others) and, where trained, the breed identifier of real photos
    (otherwise the VAE's own breed head reads them)."""

    vae: BreedVAE
    prior: LatentPrior
    sampling: SamplerSettings = field(default_factory=SamplerSettings)
    identifier: BreedIdentifier | None = None

    @property
    def device(self) -> torch.device:
        return self.vae.prior_mean.device

    @property
    def n_breeds(self) -> int:
        return self.vae.cfg.n_breeds

    @property
    def photo_size(self) -> int:
        """The side an uploaded photo is best decoded at: the largest any part reads."""
        side = self.vae.cfg.photo_size
        return max(side, self.identifier.cfg.image_size) if self.identifier is not None else side

    @property
    def has_guide(self) -> bool:
        """Whether an autoguidance weight above 1 can be used."""
        return getattr(self.prior, "guide", None) is not None

    @property
    def has_student(self) -> bool:
        """Whether ``distilled`` sampling can be used."""
        return getattr(self.prior, "student", None) is not None

    def _modules(self) -> list[nn.Module]:
        return [self.vae, *self.prior.modules().values(), *([self.identifier] if self.identifier is not None else [])]

    def to(self, device: str | torch.device) -> DogModel:
        for module in self._modules():
            module.to(device)
        return self

    def eval(self) -> DogModel:
        for module in self._modules():
            module.eval()
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """Every weight, the prior's and the identifier's (head and breed space) under their prefixes: the layout of
        ``model.safetensors`` (the identifier's trunk is not stored: it comes from its package)."""
        state = dict(self.vae.state_dict())
        for prefix, module in self.stored_parts().items():
            state |= {f"{prefix}.{k}": v for k, v in module.state_dict().items()}
        return state

    def stored_parts(self) -> dict[str, nn.Module]:
        """The modules stored beside the VAE's weights, by their state-dict prefix."""
        parts = dict(self.prior.modules())
        if self.identifier is not None:
            parts[IDENTIFIER_PREFIX] = self.identifier.head
            if self.identifier.breed_space is not None:
                parts[BREED_SPACE_PREFIX] = self.identifier.breed_space
        return parts
