"""Training losses and training-only networks (nothing here is served).

* :func:`stage1_loss`: the first stage's negative ELBO with a learned-scale Gaussian pixel likelihood, a KL warm-up
  (Bowman et al. 2016), the breed head's cross-entropy and a breed-consistency term on decoded prior samples (the
  frozen breed head must recognise the breed a sample was decoded as; cf. CVAE-GAN, Bao et al. 2017).
* :func:`denoising_loss`: the latent diffusion prior's v-prediction loss with condition dropout for classifier-free
  guidance.
* :func:`distillation_loss`: a few-step student's loss against two steps of the guided teacher sampler.
* The autoencoder recipe of VQGAN / Stable Diffusion (Esser et al. 2021, Rombach et al. 2022), as optional terms of
  the same loss: a perceptual distance of the reconstruction (shift-tolerant LPIPS, ``training/perceptual.py``)
  and a hinge loss against a :class:`PatchDiscriminator` that starts once reconstructions have settled, weighted
  by :func:`adaptive_weight`, the ratio of the reconstruction's and the adversarial term's gradients at the
  decoder's last layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model import sampler
from model.autoencoder import BreedVAE
from model.diffusion import LatentDiffusion
from training.data import to_tensor


@dataclass
class LossWeights:
    """loss = pixel_nll + beta * warmup * KL + breed_weight * CE(q(y|x), y) + generated_breed_weight * CE on samples."""

    beta: float = 1.0
    breed_weight: float = 1.0  # the breed head has its own trunk, so no balancing against pixels
    generated_breed_weight: float = 3.0
    generated_fraction: float = 0.25  # share of each batch decoded from N(0, I) for the consistency term
    # + perceptual_weight * (pixels per image) * LPIPS(reconstruction, photo): per pixel, like the pixel term
    perceptual_weight: float = 0.0
    perceptual_images: int = 16  # images of each batch it scores: on a CPU it costs more than the VAE itself
    # + adversarial_weight * adaptive weight * hinge generator loss, from step adversarial_start on
    adversarial_weight: float = 0.0
    adversarial_start: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    reconstruction: Tensor | None = None  # detached, for the discriminator's step


def gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Elementwise -log N(x; mean, exp(log_scale)^2) with a per-channel scale, in nats."""
    log_scale = log_scale.view(1, -1, 1, 1)
    return 0.5 * ((x - mean) * torch.exp(-log_scale)).pow(2) + log_scale + 0.5 * math.log(2 * math.pi)


def stage1_loss(
    vae: BreedVAE,
    x: Tensor,
    breeds: Tensor,
    weights: LossWeights,
    kl_scale: float = 1.0,
    perceptual: nn.Module | None = None,
    discriminator: nn.Module | None = None,
) -> LossTerms:
    """Negative ELBO plus the breed terms for a batch of images in [0, 1], plus the perceptual and adversarial terms
    when their networks are given (``discriminator``: only once it plays). The consistency term only in training
    mode: evaluation reports the ELBO and breed terms, so it skips that extra decode."""
    n_breeds = vae.cfg.n_breeds
    mu, log_var = vae.encode(x)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
    one_hot = F.one_hot(breeds, n_breeds).to(x.dtype)
    x_hat = vae.decode(z, one_hot)
    pixel_nll = gaussian_nll(x, x_hat, vae.pixel_log_scale()).flatten(1).sum(1).mean()
    kl_per_dim = (0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var)).mean(0)
    kl = kl_per_dim.sum()
    logits = vae.breed_logits(x)
    breed_ce = F.cross_entropy(logits, breeds, label_smoothing=0.1)
    extras: dict[str, float] = {}
    reconstruction = pixel_nll
    if perceptual is not None and weights.perceptual_weight > 0:
        k = min(weights.perceptual_images, len(x))
        distance = perceptual(x_hat[:k], x[:k]).mean()
        reconstruction = reconstruction + weights.perceptual_weight * x[0].numel() * distance
        extras["perceptual"] = distance.item()
    loss = reconstruction + weights.beta * kl_scale * kl + weights.breed_weight * breed_ce
    if discriminator is not None and weights.adversarial_weight > 0:
        frozen = {k: v.detach() for k, v in discriminator.named_parameters()}  # its own step trains it
        generator = -torch.func.functional_call(discriminator, frozen, (x_hat,)).mean()
        balance = adaptive_weight(reconstruction, generator, vae.decoder.head[-1].weight)
        loss = loss + weights.adversarial_weight * balance * generator
        extras |= {"generator": generator.item(), "adaptive_weight": balance.item()}
    use_generated = vae.training and weights.generated_breed_weight > 0
    n_generated = int(round(weights.generated_fraction * x.shape[0])) if use_generated else 0
    if n_generated > 0:
        target = breeds[:n_generated]
        fake = vae.decode(torch.randn(n_generated, vae.cfg.latent_dim, device=x.device), one_hot[:n_generated])
        frozen = {k: v.detach() for k, v in vae.breed_head.named_parameters()}
        fake_logits = torch.func.functional_call(vae.breed_head, frozen, (fake,))
        generated_ce = F.cross_entropy(fake_logits, target)
        loss = loss + weights.generated_breed_weight * generated_ce
        extras |= {
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
        reconstruction=x_hat.detach(),
    )


class PatchDiscriminator(nn.Module):
    """D(x): a real/fake logit for every overlapping patch of an image in [0, 1] (PatchGAN, Isola et al. 2017; the
    VQGAN discriminator's shape, with group norm): judges texture, not the whole dog."""

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks += [nn.Conv2d(width, out, 4, stride, 1), nn.GroupNorm(8, out), nn.LeakyReLU(0.2)]
            width = out
        blocks.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2 - 1)


def hinge_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


class Stage1Objective(nn.Module):
    """``stage1_loss`` as a module's forward, so that DistributedDataParallel sees the VAE's parameters. The
    perceptual network is frozen; the discriminator is trained by its own step, and held here only to be called."""

    def __init__(self, vae: BreedVAE, weights: LossWeights, perceptual: nn.Module | None = None) -> None:
        super().__init__()
        self.vae, self.weights, self.perceptual = vae, weights, perceptual

    def forward(
        self, x: Tensor, breeds: Tensor, kl_scale: float = 1.0, discriminator: nn.Module | None = None
    ) -> LossTerms:
        return stage1_loss(self.vae, x, breeds, self.weights, kl_scale, self.perceptual, discriminator)


CONDITION_DROPOUT = 0.1  # share of training rows with the breed condition dropped (y = 0): classifier-free guidance


def denoising_loss(denoiser: LatentDiffusion, z: Tensor, breed_weights: Tensor) -> tuple[Tensor, Tensor]:
    """(mean squared v-prediction error per latent number at random times, the same without gradient)."""
    x = denoiser.standardise(z)
    t = torch.rand(len(x), device=x.device)
    x_t, v = denoiser.noised(x, t, torch.randn_like(x))
    if denoiser.training:
        breed_weights = breed_weights * (torch.rand(len(x), 1, device=x.device) >= CONDITION_DROPOUT).to(x.dtype)
    error = (denoiser.velocity(x_t, t, breed_weights) - v).pow(2).mean(1)
    return error.mean(), error.detach().mean()


def distillation_loss(
    student: LatentDiffusion,
    teacher: LatentDiffusion,
    z: Tensor,
    breed_weights: Tensor,
    teacher_settings: sampler.SamplerSettings,
    student_steps: int,
    guide: LatentDiffusion | None = None,
) -> Tensor:
    """Progressive distillation (Salimans & Ho 2022) with the guidance folded in (Meng et al. 2023).

    From a training latent noised to a time of the student's ``student_steps``-step grid, two deterministic DDIM steps
    of the guided teacher (its classifier-free guidance, rescale and autoguidance) land at the grid's next time; the
    student's one unguided step must land there too. Scored on the clean latent that single step would need, weighted
    by max(SNR, 1), the paper's "truncated SNR" weighting."""
    x = teacher.standardise(z)
    n = len(x)
    index = torch.randint(student_steps, (n,), device=x.device)
    t = 1.0 - index.to(x.dtype) / student_steps
    half = 0.5 / student_steps
    t_mid, t_next = t - half, t - 2 * half
    col = (t[:, None], t_mid[:, None], t_next[:, None])
    with torch.no_grad():
        x_t, _ = teacher.noised(x, t, torch.randn_like(x))
        v = sampler.velocity(teacher, x_t, t, breed_weights, teacher_settings, guide)
        x_mid = sampler.ddim_step(teacher, x_t, v, col[0], col[1])
        v = sampler.velocity(teacher, x_mid, t_mid, breed_weights, teacher_settings, guide)
        x_landed = sampler.ddim_step(teacher, x_mid, v, col[1], col[2])
        alpha, sigma = teacher.alpha_sigma(col[0])
        alpha_next, sigma_next = teacher.alpha_sigma(col[2])
        # The clean latent whose DDIM step from x_t lands on x_landed.
        x0_target = (x_landed - sigma_next / sigma * x_t) / (alpha_next - sigma_next / sigma * alpha)
    x0_student = alpha * x_t - sigma * student.velocity(x_t, t, breed_weights)
    weight = (alpha / sigma).pow(2).clamp(min=1.0)
    return (weight * (x0_student - x0_target).pow(2)).mean()


def adaptive_weight(reconstruction: Tensor, adversarial: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """The weight that gives the adversarial loss's gradient at ``last_layer`` the norm of the reconstruction's
    (Esser et al. 2021), detached."""
    rec_grad = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0].norm()
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0].norm()
    return (rec_grad / (adv_grad + 1e-6)).clamp(0.0, max_weight).detach()


@torch.no_grad()
def held_out_metrics(
    vae: BreedVAE, weights: LossWeights, pixels: np.ndarray, labels: torch.Tensor, device: torch.device
) -> dict[str, Any]:
    """Negative ELBO (bits/dim), PSNR and KL per dimension; no augmentation, one z sample, fixed seed."""
    was_training = vae.training
    vae.eval()
    torch.manual_seed(1234)
    nll_sum = kl_sum = mse_sum = correct = 0.0
    kl_dims = torch.zeros(vae.cfg.latent_dim)
    n = len(labels)
    for i in range(0, n, 256):
        x = to_tensor(pixels[i : i + 256]).to(device)
        y = labels[i : i + 256].to(device)
        terms = stage1_loss(vae, x, y, weights)
        k = len(y)
        nll_sum += terms.pixel_nll.item() * k
        kl_sum += terms.kl.item() * k
        mse_sum += terms.mse.item() * k
        correct += terms.breed_correct.item()
        kl_dims += terms.kl_per_dim.cpu() * k
    vae.train(was_training)
    dims = pixels[0].size
    nelbo = (nll_sum + kl_sum) / n
    mse = mse_sum / n
    return {
        # p(x) on [0,1]^D -> 8-bit bins of width 1/256: add D*log(256) nats, then convert to bits per dim.
        "val_neg_elbo_bpd": (nelbo + dims * math.log(256)) / (dims * math.log(2)),
        "val_mse": mse,
        "val_psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        "val_kl": kl_sum / n,
        "val_top1": correct / n,
        "val_active_dims": int((kl_dims / n > 0.01).sum()),
        "val_kl_per_dim": [round(v, 4) for v in (kl_dims / n).tolist()],
    }
