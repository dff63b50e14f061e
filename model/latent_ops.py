"""Latent operations on a trained :class:`~model.vae.BreedVAE`: sample, mix, identify, encode, decode.

Knows nothing of HTTP; the service and the evaluation both call these. Every operation works in
one space: a decoder input is a pair ``(z, y)`` with ``z`` in the latent and ``y`` on the breed
simplex, and a breed (or mix of breeds) ``w`` defines the prior

    diffusion prior:  z = DDIM(t * eps, w) with classifier-free guidance,   y = w
    two-stage prior:  z = g(t * u, w) + t * r * gamma * e,   y = w
    ex-post Gaussian prior:  z = mean(w) + temperature * L(w) @ eps,   y = w

with ``eps = (u, e)`` and ``t`` the temperature, where ``g`` is the second-stage decoder
(:class:`~model.vae.LatentPrior`), ``DDIM`` the sampler of :class:`~model.vae.LatentDiffusion`, ``gamma`` its learned output std, ``r`` the checkpoint's
``prior_residual_scale`` (0.5: it gave the lowest FID, see the README), and
``mean(w) = sum_b w_b mu_b``, ``L(w) = sum_b w_b L_b`` come from breed ``b``'s ex-post Gaussian
(mean, Cholesky factor). ``eps`` is standard normal noise drawn from a seed, so the same seed gives
the same "pose noise" for every mix and mixes can be compared side by side. The Gaussians also give
the closed-form densities used to read breeds off a latent (:func:`breeds_for_latent`, the fit score of
:func:`ancestry`, and its composition when there is no diffusion prior; with one, the composition is the
one under which the diffusion model best denoises the latent).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from model.vae import BreedVAE, LatentDiffusion, LatentPrior


class LatentOpError(ValueError):
    """Invalid input to a latent operation (the service maps it to a 4xx)."""


def normalise_weights(weights: Tensor) -> Tensor:
    """Validate non-negative finite weights (..., n_breeds) and scale them onto the simplex."""
    if not torch.isfinite(weights).all():
        raise LatentOpError("breed weights must be finite numbers (no NaN or infinity)")
    if (weights < 0).any():
        raise LatentOpError("breed weights must be non-negative")
    peak = weights.amax(dim=-1, keepdim=True)
    if (peak <= 0).any():
        raise LatentOpError("breed weights must not all be zero")
    weights = weights / peak  # first to [0, 1], so that the sum of huge weights cannot overflow
    return weights / weights.sum(dim=-1, keepdim=True)


MAX_LATENT_ABS = 1000.0  # typical |z_i| is below 5; far beyond this the decoder overflows to NaN


def check_latents(z: Tensor) -> None:
    if not torch.isfinite(z).all():
        raise LatentOpError("latents must be finite numbers (no NaN or infinity)")
    if z.numel() and float(z.abs().max()) > MAX_LATENT_ABS:
        raise LatentOpError(f"latent values must lie within ±{MAX_LATENT_ABS:g} (a typical value is below 5)")


def one_hot(model: BreedVAE, breed_indices: Tensor) -> Tensor:
    return torch.nn.functional.one_hot(breed_indices, model.cfg.n_breeds).float()


def noise(n: int, dim: int, seed: int | None) -> Tensor:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(n, dim, generator=generator)


def noise_dim(model: BreedVAE) -> int:
    """Size of the standard normal noise a prior sample starts from (two-stage: u, then the residual; diffusion:
    the latent at t = 1, then with ``diffusion_eta > 0`` the fresh noise of each DDIM step)."""
    if isinstance(model.latent_prior, LatentPrior):
        return model.cfg.prior_noise_dim + model.cfg.latent_dim
    if isinstance(model.latent_prior, LatentDiffusion):
        return model.latent_prior.noise_dim(model.cfg.diffusion_sampling_steps, model.cfg.diffusion_eta)
    return model.cfg.latent_dim


@torch.inference_mode()
def prior_latents(model: BreedVAE, weights: Tensor, eps: Tensor, temperature: float = 1.0) -> Tensor:
    """z for simplex weights (n, n_breeds) and standard normal noise (n, noise_dim(model))."""
    device = model.prior_mean.device
    weights, eps = weights.to(device), eps.to(device)
    if isinstance(model.latent_prior, LatentDiffusion):
        cfg = model.cfg
        return model.latent_prior(temperature * eps, weights, cfg.diffusion_sampling_steps, cfg.diffusion_guidance,
                                  cfg.diffusion_guidance_max_t, cfg.diffusion_eta, model.guide_prior, cfg.diffusion_autoguidance,
                                  cfg.diffusion_guidance_rescale, model.latent_discriminator,
                                  cfg.diffusion_discriminator_guidance, cfg.diffusion_output_scale)
    if isinstance(model.latent_prior, LatentPrior):
        u, residual = eps.split([model.cfg.prior_noise_dim, model.cfg.latent_dim], dim=1)
        return model.latent_prior(temperature * u, weights, temperature * model.cfg.prior_residual_scale * residual)
    mean = weights @ model.prior_mean
    cholesky = torch.einsum("nb,bij->nij", weights, model.prior_cholesky)
    return mean + temperature * torch.einsum("nij,nj->ni", cholesky, eps)


@torch.inference_mode()
def decode(model: BreedVAE, z: Tensor, weights: Tensor) -> Tensor:
    """(n, latent_dim) latents and (n, n_breeds) simplex weights -> (n, 3, S, S) images in [0, 1]."""
    device = model.prior_mean.device
    return model.decode(z.to(device), weights.to(device)).clamp(0, 1).cpu()


def mix_latents(
    model: BreedVAE, weights: Tensor, n: int = 1, seed: int | None = None, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Decoder inputs (z, w) for ``n`` dogs of the breed mix ``weights`` (n_breeds,)."""
    w = normalise_weights(weights.float()).expand(n, -1)
    return prior_latents(model, w, noise(n, noise_dim(model), seed), temperature).cpu(), w


def mix(
    model: BreedVAE, weights: Tensor, n: int = 1, seed: int | None = None, temperature: float = 1.0
) -> Tensor:
    """``n`` dogs of the breed mix ``weights`` (n_breeds,), same seed -> same pose noise for any mix."""
    return decode(model, *mix_latents(model, weights, n, seed, temperature))


def sample_latents(
    model: BreedVAE, n: int, breed: int | None = None, seed: int | None = None, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Decoder inputs (z, w) for ``n`` dogs of one breed, or of uniformly random breeds when ``breed`` is None."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if breed is None:
        breeds = torch.randint(0, model.cfg.n_breeds, (n,), generator=generator)
    else:
        breeds = torch.full((n,), breed, dtype=torch.long)
    w = one_hot(model, breeds)
    eps = torch.randn(n, noise_dim(model), generator=generator)
    return prior_latents(model, w, eps, temperature).cpu(), w


def sample(
    model: BreedVAE,
    n: int,
    breed: int | None = None,
    seed: int | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """``n`` dogs of one breed, or of breeds drawn uniformly at random when ``breed`` is None."""
    return decode(model, *sample_latents(model, n, breed, seed, temperature))


@dataclass
class Encoding:
    mean: Tensor  # (n, latent_dim)
    log_var: Tensor  # (n, latent_dim)
    breed_probabilities: Tensor  # (n, n_breeds)


@torch.inference_mode()
def breed_probabilities(model: BreedVAE, images: Tensor) -> Tensor:
    """q(y | x) averaged over the photo and its mirror image (test-time flip)."""
    device = model.prior_mean.device
    images = images.to(device)
    logits = model.breed_logits(images).softmax(-1) + model.breed_logits(images.flip(3)).softmax(-1)
    return (logits / 2).cpu()


@torch.inference_mode()
def encode(model: BreedVAE, images: Tensor) -> Encoding:
    """(n, 3, S, S) images in [0, 1] -> posterior parameters and breed probabilities."""
    mean, log_var = model.encode(images.to(model.prior_mean.device))
    return Encoding(mean.cpu(), log_var.cpu(), breed_probabilities(model, images))


def identify(model: BreedVAE, images: Tensor, top_k: int = 5) -> list[list[tuple[int, float]]]:
    """Best-first (breed index, probability) pairs per image."""
    probs = breed_probabilities(model, images)
    k = max(1, min(top_k, probs.shape[1]))
    values, indices = probs.topk(k, dim=1)
    return [list(zip(idx.tolist(), val.tolist())) for idx, val in zip(indices, values)]


def reconstruct(model: BreedVAE, images: Tensor) -> Tensor:
    """Decode a photo's posterior mean with its own predicted breed probabilities."""
    enc = encode(model, images)
    return decode(model, enc.mean, enc.breed_probabilities)


def transfer(model: BreedVAE, images: Tensor, weights: Tensor) -> Tensor:
    """Keep each photo's z (pose, background) and decode it as the breed mix ``weights``."""
    w = normalise_weights(weights.float()).expand(images.shape[0], -1)
    return decode(model, encode(model, images).mean, w)


@torch.inference_mode()
def breeds_for_latent(model: BreedVAE, z: Tensor) -> Tensor:
    """p(breed | z) by Bayes' rule over the per-breed ex-post Gaussians (uniform breed prior)."""
    device = model.prior_mean.device
    z = z.to(device)
    diff = z[None, :, :] - model.prior_mean[:, None, :]  # (B, n, d)
    # One triangular solve per breed with the n latents as columns: expanding the (B, d, d) factors to
    # every latent would need n * B * d^2 floats (57 GB for 1,946 latents of 512 numbers).
    whitened = torch.linalg.solve_triangular(model.prior_cholesky, diff.transpose(1, 2), upper=False).permute(2, 0, 1)
    log_det = model.prior_cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (B,)
    log_likelihood = -0.5 * whitened.pow(2).sum(-1) - log_det
    return log_likelihood.softmax(-1).cpu()


def decode_latents(model: BreedVAE, z: Tensor, weights: Tensor | None = None) -> Tensor:
    """Decode latents with given breed weights (n_breeds,), or with each z's own breed posterior."""
    if z.ndim != 2 or z.shape[1] != model.cfg.latent_dim:
        raise LatentOpError(f"each latent must have {model.cfg.latent_dim} numbers, got shape {tuple(z.shape)}")
    check_latents(z)
    z = z.float()
    w = breeds_for_latent(model, z) if weights is None else normalise_weights(weights.float()).expand(z.shape[0], -1)
    return decode(model, z, w)


def mixed_prior_log_density(model: BreedVAE, z: Tensor, weights: Tensor) -> Tensor:
    """log N(z; mean(w), L(w) L(w)^T) for one latent z (d,) and weights (k, n_breeds) -> (k,).

    Differentiable in ``weights`` (used by :func:`ancestry`)."""
    mean = weights @ model.prior_mean
    cholesky = torch.einsum("kb,bij->kij", weights, model.prior_cholesky)
    diff = (z[None] - mean).unsqueeze(-1)
    whitened = torch.linalg.solve_triangular(cholesky, diff, upper=False).squeeze(-1)
    log_det = cholesky.diagonal(dim1=-2, dim2=-1).abs().clamp_min(1e-12).log().sum(-1)
    return -0.5 * whitened.pow(2).sum(-1) - log_det - 0.5 * z.numel() * math.log(2 * math.pi)


@dataclass
class Ancestry:
    weights: Tensor  # (n_breeds,) on the simplex, at most max_breeds non-zero
    mix_image: Tensor  # (3, S, S): a dog of that mix (fixed seed, so the same photo gives the same picture)
    fit: float  # P(a dog of the mix lies at least this far from the mix's centre): ~0.5 typical, ~0 unexplained
    mahalanobis: float  # the photo's latent's Mahalanobis distance from the mix's prior, per sqrt(dimension)
    log_density_mix: float  # log density of the photo's z under the mix's prior
    log_density_best_breed: float  # ... and under the single most likely breed's prior


def mix_typicality(model: BreedVAE, z: Tensor, weights: Tensor) -> tuple[float, float]:
    """(chi-square tail probability, distance per sqrt(d)) of z (d,) under the mixed prior of ``weights``.

    If z were drawn from the mix's Gaussian its squared Mahalanobis distance would follow chi^2 with d
    degrees of freedom, so the tail probability says how typical the photo is for a dog of that mix.
    """
    mean = weights @ model.prior_mean
    cholesky = torch.einsum("b,bij->ij", weights, model.prior_cholesky)
    whitened = torch.linalg.solve_triangular(cholesky, (z - mean)[:, None], upper=False).squeeze(-1)
    squared, d = float(whitened.pow(2).sum()), z.numel()
    tail = float(torch.special.gammaincc(torch.tensor(d / 2, dtype=torch.float64), torch.tensor(squared / 2, dtype=torch.float64)))
    return tail, math.sqrt(squared / d)


def _maximise_on_simplex(objective: Callable[[Tensor], Tensor], support: Tensor, init: Tensor, steps: int,
                         lr: float) -> Tensor:
    """Weights on the simplex, zero outside ``support``, that maximise ``objective`` (a fixed number of Adam
    steps on softmax logits from ``init``: deterministic). Only the weights get gradients, never the model."""
    logits = init.clamp_min(1e-6).log().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=lr)
    mask = torch.where(support, 0.0, float("-inf"))
    for _ in range(steps):
        (logits.grad,) = torch.autograd.grad(-objective((logits + mask).softmax(-1)), logits)
        optimiser.step()
    return (logits + mask).softmax(-1).detach()


def _gaussian_ancestry(model: BreedVAE, z: Tensor, probabilities: Tensor, max_breeds: int, steps: int) -> Tensor:
    log_prior = probabilities * model.cfg.n_breeds  # Dirichlet concentration - 1, scaled to the number of breeds

    def objective(w: Tensor) -> Tensor:
        return mixed_prior_log_density(model, z, w[None])[0] + (log_prior * (w + 1e-6).log()).sum()

    everything = torch.ones_like(probabilities, dtype=torch.bool)
    w = _maximise_on_simplex(objective, everything, probabilities, steps, lr=0.05)
    keep = torch.zeros_like(everything)
    keep[w.topk(min(max_breeds, w.numel())).indices] = True
    return _maximise_on_simplex(objective, keep, torch.where(keep, w, torch.zeros_like(w)), steps, lr=0.05)


def _diffusion_ancestry(prior: LatentDiffusion, z: Tensor, max_breeds: int, steps: int) -> Tensor:
    n_breeds = prior.breed_embedding.in_features
    with torch.no_grad():
        pure = prior.denoising_error(z, torch.eye(n_breeds, device=z.device))
    keep = torch.zeros(n_breeds, dtype=torch.bool, device=z.device)
    keep[pure.topk(min(max_breeds, n_breeds), largest=False).indices] = True
    start = keep.float() / keep.sum()
    return _maximise_on_simplex(lambda w: -prior.denoising_error(z, w[None])[0], keep, start, steps, lr=0.1)


def ancestry_weights(model: BreedVAE, z: Tensor, probabilities: Tensor, max_breeds: int = 3,
                     steps: int | None = None) -> Tensor:
    """Breed weights (n_breeds,) on the simplex, at most ``max_breeds`` non-zero, that best explain one latent z (d,).

    With a diffusion prior: maximum likelihood under that prior, the one the samples and mixes come from.
    The denoiser's error on z (:meth:`~model.vae.LatentDiffusion.denoising_error`) stands in for the
    negative log-likelihood; the ``max_breeds`` breeds whose own conditions explain z best are the support,
    and the weights on it minimise the error under the mixed condition (``steps`` Adam steps, default 30).
    The breed head's belief ``probabilities`` is not used: the head is trained on photos, and on generated
    dogs it is mostly wrong, which kept the Gaussian ancestry below from finding known mixes (README).

    Otherwise: the MAP weights under the ex-post Gaussians, log N(z; mean(w), Sigma(w)) plus
    sum_b q(b|x) * n_breeds * log w_b (a Dirichlet prior whose concentration is the breed head's belief),
    first over all breeds, then again on the ``max_breeds`` largest (``steps`` Adam steps each, default 150).

    Deterministic: fixed starts, fixed numbers of steps, fixed probe noise.
    """
    if max_breeds < 1:
        raise LatentOpError("max_breeds must be at least 1")
    device = model.prior_mean.device
    z, probabilities = z.to(device), probabilities.to(device)
    with torch.enable_grad(), torch.inference_mode(False):
        z, probabilities = z.clone(), probabilities.clone()  # ordinary tensors, even when made in inference mode
        if isinstance(model.latent_prior, LatentDiffusion):
            w = _diffusion_ancestry(model.latent_prior, z, max_breeds, 30 if steps is None else steps)
        else:
            w = _gaussian_ancestry(model, z, probabilities, max_breeds, 150 if steps is None else steps)
    w = torch.where(w > 1e-3, w, torch.zeros_like(w))
    return (w / w.sum()).cpu()


def ancestry(model: BreedVAE, image: Tensor, max_breeds: int = 3, steps: int | None = None) -> Ancestry:
    """Which mix of known breeds best explains one photo (1, 3, S, S)? See :func:`ancestry_weights`."""
    enc = encode(model, image)
    device = model.prior_mean.device
    z = enc.mean[0].to(device)
    w = ancestry_weights(model, z, enc.breed_probabilities[0], max_breeds, steps)
    with torch.inference_mode():
        mix_image = mix(model, w, n=1, seed=0)
        single = mixed_prior_log_density(model, z, torch.eye(model.cfg.n_breeds, device=device))
        mixed = mixed_prior_log_density(model, z, w[None].to(device))[0]
        fit, distance = mix_typicality(model, z, w.to(device))
    return Ancestry(
        weights=w,
        mix_image=mix_image[0],
        fit=fit,
        mahalanobis=distance,
        log_density_mix=float(mixed),
        log_density_best_breed=float(single.max()),
    )


def latent_endpoint(model: BreedVAE, weights: Tensor | None = None, latent: Tensor | None = None,
                    seed: int | None = None, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """One end of a morph: a breed mix (z drawn from its prior with ``seed``) or a given latent."""
    if (weights is None) == (latent is None):
        raise LatentOpError("a morph end is either breed weights or a latent, not both or neither")
    if latent is not None:
        z = latent.reshape(1, -1)
        if z.shape[1] != model.cfg.latent_dim:
            raise LatentOpError(f"a latent must be {model.cfg.latent_dim} finite numbers")
        check_latents(z)
        z = z.float()
        return z, breeds_for_latent(model, z)
    w = normalise_weights(weights.float())[None]
    return prior_latents(model, w, noise(1, noise_dim(model), seed), temperature).cpu(), w


def morph(model: BreedVAE, start: tuple[Tensor, Tensor], end: tuple[Tensor, Tensor], steps: int) -> Tensor:
    """``steps`` images along the straight line from ``start`` to ``end`` in (z, breed weights); ends included."""
    if steps < 2:
        raise LatentOpError("a morph needs at least 2 steps")
    t = torch.linspace(0, 1, steps)[:, None]
    (z0, w0), (z1, w1) = start, end
    return decode(model, (1 - t) * z0 + t * z1, (1 - t) * w0 + t * w1)
