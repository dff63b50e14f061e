"""Latent operations on a trained :class:`~model.prior.DogModel`: sample, mix, identify, encode, decode, ancestry.

Knows nothing of HTTP; the service and the evaluation both call these. Every operation works in one space: a
decoder input is a pair ``(z, y)`` with ``z`` in the latent and ``y`` on the breed simplex, and a breed (or mix of
breeds) ``w`` defines the prior sample ``z = prior.sample(t * eps, w)``, ``y = w`` (``model/prior.py``), with
``eps`` standard normal noise drawn from a seed and ``t`` the temperature. The same seed gives the same noise for
every mix, so mixes can be compared side by side. Sampling calls take the sampler settings to use
(``sampling``; default: the checkpoint's). The per-breed Gaussians of the VAE give the closed-form densities used to
read breeds off a latent (:func:`breeds_for_latent`, the fit score of :func:`ancestry` by the latent). Ancestry by
the identifier weighs breed mixes in the pretrained trunk's embedding of the (real) photo instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from model import interrupt, sampler
from model.breed_space import BreedSpace
from model.identifier import PhotoReading
from model.imaging import at_side
from model.prior import DogModel
from model.sampler import SamplerSettings


class LatentOpError(ValueError):
    """Invalid input to a latent operation (the service maps it to a 4xx)."""


def normalise_weights(weights: Tensor) -> Tensor:
    """Validate non-negative finite weights (..., n_breeds) and scale them onto the simplex (pass float64: a weight
    of 1e300 is finite there, and infinite once cast to float32)."""
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


def one_hot(model: DogModel, breed_indices: Tensor) -> Tensor:
    return torch.nn.functional.one_hot(breed_indices, model.n_breeds).float()


def noise(n: int, dim: int, seed: int | None) -> Tensor:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(n, dim, generator=generator)


def noise_dim(model: DogModel, sampling: SamplerSettings | None = None) -> int:
    """Size of the standard normal noise one prior sample starts from."""
    return model.prior.noise_dim(sampling or model.sampling)


@torch.inference_mode()
def prior_latents(
    model: DogModel, weights: Tensor, eps: Tensor, temperature: float = 1.0, sampling: SamplerSettings | None = None
) -> Tensor:
    """z for simplex weights (n, n_breeds) and standard normal noise (n, noise_dim(model, sampling))."""
    device = model.device
    return model.prior.sample(eps.to(device), weights.to(device), sampling or model.sampling, temperature)


@torch.inference_mode()
def decode(model: DogModel, z: Tensor, weights: Tensor) -> Tensor:
    """(n, latent_dim) latents and (n, n_breeds) simplex weights -> (n, 3, S, S) images in [0, 1]."""
    device = model.device
    return model.vae.decode(z.to(device), weights.to(device)).clamp(0, 1).cpu()


def mix_latents(
    model: DogModel,
    weights: Tensor,
    n: int = 1,
    seed: int | None = None,
    temperature: float = 1.0,
    sampling: SamplerSettings | None = None,
) -> tuple[Tensor, Tensor]:
    """Decoder inputs (z, w) for ``n`` dogs of the breed mix ``weights`` (n_breeds,)."""
    w = normalise_weights(weights.double()).float().expand(n, -1)
    eps = noise(n, noise_dim(model, sampling), seed)
    return prior_latents(model, w, eps, temperature, sampling).cpu(), w


def mix(
    model: DogModel,
    weights: Tensor,
    n: int = 1,
    seed: int | None = None,
    temperature: float = 1.0,
    sampling: SamplerSettings | None = None,
) -> Tensor:
    """``n`` dogs of the breed mix ``weights`` (n_breeds,), same seed -> same pose noise for any mix."""
    return decode(model, *mix_latents(model, weights, n, seed, temperature, sampling))


def sample_latents(
    model: DogModel,
    n: int,
    breed: int | None = None,
    seed: int | None = None,
    temperature: float = 1.0,
    sampling: SamplerSettings | None = None,
) -> tuple[Tensor, Tensor]:
    """Decoder inputs (z, w) for ``n`` dogs of one breed, or of uniformly random breeds when ``breed`` is None."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if breed is None:
        breeds = torch.randint(0, model.n_breeds, (n,), generator=generator)
    else:
        breeds = torch.full((n,), breed, dtype=torch.long)
    w = one_hot(model, breeds)
    eps = torch.randn(n, noise_dim(model, sampling), generator=generator)
    return prior_latents(model, w, eps, temperature, sampling).cpu(), w


def sample(
    model: DogModel,
    n: int,
    breed: int | None = None,
    seed: int | None = None,
    temperature: float = 1.0,
    sampling: SamplerSettings | None = None,
) -> Tensor:
    """``n`` dogs of one breed, or of breeds drawn uniformly at random when ``breed`` is None."""
    return decode(model, *sample_latents(model, n, breed, seed, temperature, sampling))


@dataclass
class Encoding:
    mean: Tensor  # (n, latent_dim)
    log_var: Tensor  # (n, latent_dim)
    breed_probabilities: Tensor  # (n, n_breeds)


@torch.inference_mode()
def read_photos(model: DogModel, images: Tensor, head: str = "identifier") -> PhotoReading:
    """What real photos show: calibrated breed probabilities and whether they look like a dog.

    ``head="identifier"`` (the default) uses the checkpoint's breed identifier on the pretrained trunk where it has
    one; ``"vae"`` the VAE's own breed head (trained from scratch; q(y | x) averaged over the photo and its mirror
    image, no dog probability: every photo counts as a dog). Only real photos may be read with the identifier: its
    trunk is ImageNet-trained and never scores a generated dog except as the evaluation's judge."""
    if head == "identifier" and model.identifier is not None:
        return model.identifier.read(images)
    if head not in ("identifier", "vae"):
        raise ValueError(f"unknown breed head {head!r} (identifier or vae)")
    vae = model.vae
    images = at_side(images.to(model.device), vae.cfg.head_size)
    probs = (vae.breed_logits(images).softmax(-1) + vae.breed_logits(images.flip(3)).softmax(-1)) / 2
    return PhotoReading(probs.cpu(), torch.ones(len(images)))


def breed_probabilities(model: DogModel, images: Tensor, head: str = "identifier") -> Tensor:
    """q(y | x) of photos of any side (see :func:`read_photos`)."""
    return read_photos(model, images, head).breed_probabilities


def dog_threshold(model: DogModel) -> float:
    """The dog probability below which a photo is answered as not looking like a dog (0 without an identifier)."""
    return model.identifier.cfg.dog_threshold if model.identifier is not None else 0.0


@torch.inference_mode()
def posterior_mean(model: DogModel, images: Tensor) -> Tensor:
    """(n, 3, S, S) images in [0, 1] -> the posterior means of z (no breed reading: the trunk stays idle)."""
    return model.vae.encode(at_side(images.to(model.device), model.vae.cfg.image_size))[0].cpu()


@torch.inference_mode()
def encode(model: DogModel, images: Tensor) -> Encoding:
    """(n, 3, S, S) images in [0, 1] -> posterior parameters and breed probabilities. Photos are best given at
    ``model.photo_size``: the encoder reads them resized to ``cfg.image_size``, the breed head at its own side."""
    mean, log_var = model.vae.encode(at_side(images.to(model.device), model.vae.cfg.image_size))
    return Encoding(mean.cpu(), log_var.cpu(), breed_probabilities(model, images))


@dataclass
class Identification:
    breeds: list[tuple[int, float]]  # best-first (breed index, probability)
    dog_probability: float
    looks_like_a_dog: bool


def identify(model: DogModel, images: Tensor, top_k: int = 5) -> list[Identification]:
    """Per photo: the best-first breeds and whether it looks like a dog at all."""
    reading = read_photos(model, images)
    k = max(1, min(top_k, reading.breed_probabilities.shape[1]))
    values, indices = reading.breed_probabilities.topk(k, dim=1)
    threshold = dog_threshold(model)
    return [
        Identification(list(zip(idx.tolist(), val.tolist(), strict=True)), float(dog), bool(dog >= threshold))
        for idx, val, dog in zip(indices, values, reading.dog_probability, strict=True)
    ]


def reconstruct(model: DogModel, images: Tensor) -> Tensor:
    """Decode a photo's posterior mean with its own predicted breed probabilities."""
    enc = encode(model, images)
    return decode(model, enc.mean, enc.breed_probabilities)


# How far a transfer redraws the photo's latent (SDEdit's time): measured in docs/experiments.md (issue 38).
TRANSFER_STRENGTH = 0.7


@torch.inference_mode()
def transfer(
    model: DogModel, images: Tensor, weights: Tensor, strength: float = TRANSFER_STRENGTH, seed: int = 0
) -> Tensor:
    """Each photo as the breed mix ``weights``: its z redrawn under the mix by a diffusion prior (SDEdit at
    ``strength``: 0 keeps z, 1 forgets the photo; the coarse pose, framing and background survive in between),
    then decoded with the mix. ``seed`` fixes the noise of the redraw. A Gaussian prior keeps z."""
    w = normalise_weights(weights.double()).float().expand(images.shape[0], -1)
    z = posterior_mean(model, images)
    if strength > 0:
        eps = noise(len(z), z.shape[1], seed).to(model.device)
        z = model.prior.edit(z.to(model.device), w.to(model.device), model.sampling, strength, eps).cpu()
    return decode(model, z, w)


@torch.inference_mode()
def breeds_for_latent(model: DogModel, z: Tensor) -> Tensor:
    """p(breed | z) by Bayes' rule over the per-breed ex-post Gaussians (uniform breed prior)."""
    vae = model.vae
    z = z.to(model.device)
    diff = z[None, :, :] - vae.prior_mean[:, None, :]  # (B, n, d)
    # One triangular solve per breed with the n latents as columns: expanding the (B, d, d) factors to
    # every latent would need n * B * d^2 floats (57 GB for 1,946 latents of 512 numbers). A shared factor
    # (1, d, d) broadcasts over the breeds.
    whitened = torch.linalg.solve_triangular(vae.prior_cholesky, diff.transpose(1, 2), upper=False).permute(2, 0, 1)
    log_det = vae.prior_cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (B,)
    log_likelihood = -0.5 * whitened.pow(2).sum(-1) - log_det
    return log_likelihood.softmax(-1).cpu()


def decode_latents(model: DogModel, z: Tensor, weights: Tensor | None = None) -> Tensor:
    """Decode latents with given breed weights (n_breeds,), or with each z's own breed posterior."""
    if z.ndim != 2 or z.shape[1] != model.vae.cfg.latent_dim:
        raise LatentOpError(f"each latent must have {model.vae.cfg.latent_dim} numbers, got shape {tuple(z.shape)}")
    check_latents(z)
    z = z.float()
    w = (
        breeds_for_latent(model, z)
        if weights is None
        else normalise_weights(weights.double()).float().expand(z.shape[0], -1)
    )
    return decode(model, z, w)


ANCESTRY_SPACES = ("identifier", "latent")


@dataclass
class Ancestry:
    weights: Tensor  # (n_breeds,) on the simplex, at most max_breeds non-zero
    mix_image: Tensor  # (3, S, S): a dog of that mix (fixed seed, so the same photo gives the same picture)
    by: str  # the space the mix was weighed in: "identifier" (the trunk's embedding) or "latent" (the prior's)
    fit: float  # P(a dog of the mix lies at least this far from the mix's centre): ~0.5 typical, ~0 unexplained
    mahalanobis: float  # the photo's Mahalanobis distance from the mix's centre, per sqrt(dimension)
    log_density_mix: float  # log density of the photo under the mix's Gaussian (in that space)
    log_density_best_breed: float  # ... and under the single most likely breed's
    dog_probability: float  # the photo read once for both: see :class:`Identification`
    looks_like_a_dog: bool


def chi_square_tail(squared: float, d: int) -> float:
    """P(chi^2 with d degrees of freedom >= squared): how typical a squared Mahalanobis distance is in d dimensions
    (a point drawn from the Gaussian itself gives a uniform tail probability, 0.5 at the median)."""
    return float(
        torch.special.gammaincc(
            torch.tensor(d / 2, dtype=torch.float64), torch.tensor(squared / 2, dtype=torch.float64)
        )
    )


def mix_typicality(model: DogModel, z: Tensor, weights: Tensor) -> tuple[float, float]:
    """(chi-square tail probability, distance per sqrt(d)) of z (d,) under the mixed prior of ``weights``."""
    mean = weights @ model.vae.prior_mean
    cholesky = model.vae.mixed_cholesky(weights)
    whitened = torch.linalg.solve_triangular(cholesky, (z - mean)[:, None], upper=False).squeeze(-1)
    squared, d = float(whitened.pow(2).sum()), z.numel()
    return chi_square_tail(squared, d), math.sqrt(squared / d)


def _maximise_on_simplex(
    objective: Callable[[Tensor], Tensor], support: Tensor, init: Tensor, steps: int, lr: float
) -> Tensor:
    """Weights on the simplex, zero outside ``support``, that maximise ``objective`` (a fixed number of Adam
    steps on softmax logits from ``init``: deterministic). Only the weights get gradients, never the model."""
    logits = init.clamp_min(1e-6).log().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=lr)
    mask = torch.where(support, 0.0, float("-inf"))
    for _ in range(steps):
        interrupt.check()
        (logits.grad,) = torch.autograd.grad(-objective((logits + mask).softmax(-1)), logits)
        optimiser.step()
    return (logits + mask).softmax(-1).detach()


# Ancestry narrows the breeds in steps of rising cost per breed (rows per prior call kept near 128, so a stop comes
# within one call). With a mix reader (``model/reader.py``), its ``READ_BREEDS`` likeliest breeds are the candidates,
# scored with ``PRECISE_PROBES``; the ``max_breeds`` best are the support and the reader's weights on it the answer
# (``READER_FIT_STEPS`` = 0: on the default's 120 generated 70/30 mixes, 104 main breeds first in 1.1 s a call, against
# 83 after 10 Adam steps of the likelihood, 2.9 s; docs/experiments.md, issue 25). Without one, the slope of the
# likelihood at the even mix of every breed (one backward pass for all breeds) keeps ``SHORTLISTED_BREEDS``, scored
# on their own condition with ``SCREEN_PROBES`` probes; the ``SCREENED_BREEDS`` best are scored precisely and the
# weights on the support fitted in ``FIT_STEPS`` Adam steps from the even mix.
SHORTLISTED_BREEDS = 24
SCREEN_PROBES = 8
PRECISE_PROBES = 32
SCREENED_BREEDS = 6
FIT_STEPS = 10
READ_BREEDS = 6
READER_FIT_STEPS = 0
ROWS_PER_CALL = 128


def _scores(model: DogModel, z: Tensor, conditions: Tensor, probes: int) -> Tensor:
    """The prior's log-likelihood of z under each condition row, in calls of about ``ROWS_PER_CALL`` rows."""
    scores = []
    for chunk in conditions.split(max(1, ROWS_PER_CALL // probes)):
        interrupt.check()
        scores.append(model.prior.log_likelihood(z, chunk, probes))
    return torch.cat(scores)


def _candidates(model: DogModel, z: Tensor, max_breeds: int) -> tuple[Tensor, Tensor | None]:
    """The breeds worth a precise score, and the weights the fit may start from (None: the even mix)."""
    n = model.n_breeds
    reader = getattr(model.prior, "reader", None)
    if reader is not None:
        with torch.no_grad():
            read = reader.weights(z[None])[0]
        return read.topk(min(max(READ_BREEDS, max_breeds), n)).indices, read
    even = torch.full((n,), 1 / n, device=z.device, requires_grad=True)
    (slope,) = torch.autograd.grad(model.prior.log_likelihood(z, even[None], SCREEN_PROBES)[0], even)
    shortlist = slope.topk(min(max(SHORTLISTED_BREEDS, max_breeds), n)).indices
    with torch.no_grad():
        quick = _scores(model, z, torch.eye(n, device=z.device)[shortlist], SCREEN_PROBES)
    return shortlist[quick.topk(min(max(SCREENED_BREEDS, max_breeds), len(shortlist))).indices], None


def ancestry_weights(
    model: DogModel,
    z: Tensor,
    max_breeds: int = 3,
    steps: int | None = None,
    sampling: SamplerSettings | None = None,
) -> Tensor:
    """Breed weights (n_breeds,) on the simplex, at most ``max_breeds`` non-zero, that best explain one latent z (d,).

    Maximum likelihood under the prior the samples and mixes come from (``prior.log_likelihood``; for the diffusion
    prior, its negative denoising error): candidate breeds (the mix reader's likeliest, or those the likelihood's
    slope and a quick screen rank best) are scored with ``PRECISE_PROBES``, the ``max_breeds`` best of those are the
    support, and the weights on it maximise the likelihood of the mixed condition as ``sampling`` (default the
    model's) scales it for its mixes (``steps`` Adam steps, default ``READER_FIT_STEPS`` from the reader's weights or
    ``FIT_STEPS`` from the even mix). Deterministic: fixed start, fixed number of steps, fixed probe noise.
    """
    if max_breeds < 1:
        raise LatentOpError("max_breeds must be at least 1")
    n = model.n_breeds
    z = z.to(model.device)
    with torch.enable_grad(), torch.inference_mode(False):
        z = z.clone()  # an ordinary tensor, even when made in inference mode
        candidates, read = _candidates(model, z, max_breeds)
        with torch.no_grad():
            precise = _scores(model, z, torch.eye(n, device=z.device)[candidates], PRECISE_PROBES)
        support = candidates[precise.topk(min(max_breeds, len(candidates))).indices]
        keep = torch.zeros(n, dtype=torch.bool, device=z.device)
        keep[support] = True
        start = keep.float() if read is None else torch.where(keep, read, torch.zeros_like(read))
        if steps is None:
            steps = FIT_STEPS if read is None else READER_FIT_STEPS
        # Scored on the condition the sampler draws this mix from (``mix_strength``), so the answer is the mix
        # whose dogs look like this one.
        strength = (sampling or model.sampling).mix_strength
        w = _maximise_on_simplex(
            lambda w: model.prior.log_likelihood(z, sampler.mix_condition(w[None], strength), PRECISE_PROBES)[0],
            keep,
            start / start.sum(),
            steps,
            lr=0.3,
        )
    w = torch.where(w > 1e-3, w, torch.zeros_like(w))
    return (w / w.sum()).cpu()


# Ancestry by the identifier: the breeds whose Gaussians over the trunk's whitened embeddings (model/breed_space.py;
# a mix's mean and covariance interpolated by weight) explain the photo's embedding best. The ``SPACE_CANDIDATES``
# (at least ``max_breeds``) breeds of highest density alone are weighted jointly, the ``max_breeds`` heaviest kept
# and weighted again (``SPACE_FIT_STEPS`` Adam steps each; 0.18 s a call with the trunk, one core). The default names
# the breed of 300 held-out photos first for 70.0 %, by the latent 3.3 % (training.evaluate, docs/experiments.md).
SPACE_CANDIDATES = 8
SPACE_FIT_STEPS = 60


def breed_space_weights(space: BreedSpace, x: Tensor, max_breeds: int = 3) -> Tensor:
    """Breed weights (n_breeds,) on the simplex, at most ``max_breeds`` non-zero, whose mix best explains the
    whitened embedding x (dim,) of one photo. Deterministic."""
    if max_breeds < 1:
        raise LatentOpError("max_breeds must be at least 1")
    n = len(space.breed_mean)
    x = x.to(space.breed_mean)
    with torch.enable_grad(), torch.inference_mode(False):
        x = x.clone()

        def density(w: Tensor) -> Tensor:
            return space.log_density(x, w[None])[0]

        with torch.no_grad():
            single = space.log_density(x, torch.eye(n, device=x.device))
        w = torch.zeros(n, device=x.device)
        for k in (min(max(SPACE_CANDIDATES, max_breeds), n), min(max_breeds, n)):
            support = torch.zeros(n, dtype=torch.bool, device=x.device)
            support[(w if w.any() else single).topk(k).indices] = True
            w = _maximise_on_simplex(density, support, support.float() / k, SPACE_FIT_STEPS, lr=0.3)
    w = torch.where(w > 1e-3, w, torch.zeros_like(w))
    return (w / w.sum()).cpu()


def served_ancestry(model: DogModel) -> str:
    """The space :func:`ancestry` weighs mixes in when not told: the identifier's where it has a breed space."""
    has_space = model.identifier is not None and model.identifier.breed_space is not None
    return "identifier" if has_space else "latent"


def ancestry(
    model: DogModel,
    image: Tensor,
    max_breeds: int = 3,
    steps: int | None = None,
    sampling: SamplerSettings | None = None,
    by: str | None = None,
) -> Ancestry:
    """Which mix of known breeds best explains one photo (1, 3, S, S)?

    ``by="identifier"`` (the default where the checkpoint's identifier has a breed space): the mix whose Gaussian
    over the pretrained trunk's embeddings of real photos best explains the photo's embedding
    (:func:`breed_space_weights`). ``by="latent"``: the mix under whose prior the photo's latent is likeliest
    (:func:`ancestry_weights`, ``steps``): the mix whose generated dogs look most like it to the model. Either way
    the dog of the mix is drawn with ``sampling`` (seed 0) and the fit is the photo's typicality in that space."""
    space = model.identifier.breed_space if model.identifier is not None else None
    by = by or served_ancestry(model)
    if by not in ANCESTRY_SPACES:
        raise LatentOpError(f"ancestry is by 'identifier' or 'latent', not {by!r}")
    if by == "identifier" and space is None:
        raise LatentOpError("this checkpoint's identifier has no breed space: ask for ancestry by 'latent'")
    device = model.device
    reading = read_photos(model, image)
    if by == "identifier":
        x = reading.embedding[0].to(device)
        w = breed_space_weights(space, x, max_breeds)
        with torch.inference_mode():
            single = space.log_density(x, torch.eye(model.n_breeds, device=device))
            mixed = space.log_density(x, w[None].to(device))[0]
            squared, d = float(space.distance(x, w[None].to(device))[0]), space.dim
        fit, distance = chi_square_tail(squared, d), math.sqrt(squared / d)
    else:
        z = posterior_mean(model, image)[0].to(device)
        w = ancestry_weights(model, z, max_breeds, steps, sampling)
        with torch.inference_mode():
            single = model.vae.gaussian_log_density(z, torch.eye(model.n_breeds, device=device))
            mixed = model.vae.gaussian_log_density(z, w[None].to(device))[0]
            fit, distance = mix_typicality(model, z, w.to(device))
    with torch.inference_mode():
        mix_image = mix(model, w, n=1, seed=0, sampling=sampling)
    return Ancestry(
        weights=w,
        mix_image=mix_image[0],
        by=by,
        fit=fit,
        mahalanobis=distance,
        log_density_mix=float(mixed),
        log_density_best_breed=float(single.max()),
        dog_probability=float(reading.dog_probability[0]),
        looks_like_a_dog=bool(reading.dog_probability[0] >= dog_threshold(model)),
    )


def latent_endpoint(
    model: DogModel,
    weights: Tensor | None = None,
    latent: Tensor | None = None,
    seed: int | None = None,
    temperature: float = 1.0,
    sampling: SamplerSettings | None = None,
) -> tuple[Tensor, Tensor]:
    """One end of a morph: a breed mix (z drawn from its prior with ``seed``) or a given latent."""
    if (weights is None) == (latent is None):
        raise LatentOpError("a morph end is either breed weights or a latent, not both or neither")
    if latent is not None:
        z = latent.reshape(1, -1)
        if z.shape[1] != model.vae.cfg.latent_dim:
            raise LatentOpError(f"a latent must be {model.vae.cfg.latent_dim} finite numbers")
        check_latents(z)
        z = z.float()
        return z, breeds_for_latent(model, z)
    w = normalise_weights(weights.double()).float()[None]
    eps = noise(1, noise_dim(model, sampling), seed)
    return prior_latents(model, w, eps, temperature, sampling).cpu(), w


def morph(model: DogModel, start: tuple[Tensor, Tensor], end: tuple[Tensor, Tensor], steps: int) -> Tensor:
    """``steps`` images along the straight line from ``start`` to ``end`` in (z, breed weights); ends included."""
    if steps < 2:
        raise LatentOpError("a morph needs at least 2 steps")
    t = torch.linspace(0, 1, steps)[:, None]
    (z0, w0), (z1, w1) = start, end
    return decode(model, (1 - t) * z0 + t * z1, (1 - t) * w0 + t * w1)
