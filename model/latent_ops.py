"""Latent operations on a trained :class:`~model.vae.BreedVAE`: sample, mix, identify, encode, decode.

Knows nothing of HTTP; the service and the evaluation both call these. Every operation works in
one space: a decoder input is a pair ``(z, y)`` with ``z`` in the latent and ``y`` on the breed
simplex, and a breed (or mix of breeds) ``w`` defines the prior

    z ~ N(sum_b w_b mu_b, (sum_b w_b L_b)(sum_b w_b L_b)^T),   y = w

where ``mu_b, L_b`` are breed ``b``'s ex-post Gaussian (mean, Cholesky factor). Drawing
``z = mean(w) + temperature * L(w) @ eps`` with ``eps`` from a seed means the same seed gives the
same "pose noise" for every mix, so mixes can be compared side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.vae import BreedVAE


class LatentOpError(ValueError):
    """Invalid input to a latent operation (the service maps it to a 4xx)."""


def normalise_weights(weights: Tensor) -> Tensor:
    """Validate non-negative finite weights (..., n_breeds) and scale them onto the simplex."""
    if not torch.isfinite(weights).all():
        raise LatentOpError("breed weights must be finite numbers (no NaN or infinity)")
    if (weights < 0).any():
        raise LatentOpError("breed weights must be non-negative")
    total = weights.sum(dim=-1, keepdim=True)
    if (total <= 0).any():
        raise LatentOpError("breed weights must not all be zero")
    return weights / total


def one_hot(model: BreedVAE, breed_indices: Tensor) -> Tensor:
    return torch.nn.functional.one_hot(breed_indices, model.cfg.n_breeds).float()


def _noise(n: int, dim: int, seed: int | None) -> Tensor:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(n, dim, generator=generator)


@torch.inference_mode()
def prior_latents(model: BreedVAE, weights: Tensor, eps: Tensor, temperature: float = 1.0) -> Tensor:
    """z for simplex weights (n, n_breeds) and standard normal noise (n, latent_dim)."""
    device = model.prior_mean.device
    weights, eps = weights.to(device), eps.to(device)
    mean = weights @ model.prior_mean
    cholesky = torch.einsum("nb,bij->nij", weights, model.prior_cholesky)
    return mean + temperature * torch.einsum("nij,nj->ni", cholesky, eps)


@torch.inference_mode()
def decode(model: BreedVAE, z: Tensor, weights: Tensor) -> Tensor:
    """(n, latent_dim) latents and (n, n_breeds) simplex weights -> (n, 3, S, S) images in [0, 1]."""
    device = model.prior_mean.device
    return model.decode(z.to(device), weights.to(device)).clamp(0, 1).cpu()


def mix(
    model: BreedVAE, weights: Tensor, n: int = 1, seed: int | None = None, temperature: float = 1.0
) -> Tensor:
    """``n`` dogs of the breed mix ``weights`` (n_breeds,), same seed -> same pose noise for any mix."""
    w = normalise_weights(weights.float()).expand(n, -1)
    z = prior_latents(model, w, _noise(n, model.cfg.latent_dim, seed), temperature)
    return decode(model, z, w)


def sample(
    model: BreedVAE,
    n: int,
    breed: int | None = None,
    seed: int | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """``n`` dogs of one breed, or of breeds drawn uniformly at random when ``breed`` is None."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if breed is None:
        breeds = torch.randint(0, model.cfg.n_breeds, (n,), generator=generator)
    else:
        breeds = torch.full((n,), breed, dtype=torch.long)
    w = one_hot(model, breeds)
    eps = torch.randn(n, model.cfg.latent_dim, generator=generator)
    return decode(model, prior_latents(model, w, eps, temperature), w)


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
    diff = z[:, None, :] - model.prior_mean[None]  # (n, B, d)
    cholesky = model.prior_cholesky.expand(z.shape[0], -1, -1, -1)
    whitened = torch.linalg.solve_triangular(cholesky, diff.unsqueeze(-1), upper=False).squeeze(-1)
    log_det = model.prior_cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (B,)
    log_likelihood = -0.5 * whitened.pow(2).sum(-1) - log_det
    return log_likelihood.softmax(-1).cpu()


def decode_latents(model: BreedVAE, z: Tensor, weights: Tensor | None = None) -> Tensor:
    """Decode latents with given breed weights (n_breeds,), or with each z's own breed posterior."""
    if z.ndim != 2 or z.shape[1] != model.cfg.latent_dim:
        raise LatentOpError(f"each latent must have {model.cfg.latent_dim} numbers, got shape {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise LatentOpError("latents must be finite numbers (no NaN or infinity)")
    w = breeds_for_latent(model, z) if weights is None else normalise_weights(weights.float()).expand(z.shape[0], -1)
    return decode(model, z, w)
