"""Latent operations on the tiny synthetic checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import checkpoint, latent_ops
from model.autoencoder import BreedVAE, VAEConfig
from model.latent_ops import LatentOpError
from model.prior import DogModel, GaussianPrior
from model.reader import MixReader, ReaderConfig


@pytest.fixture(scope="module", params=["gaussian", "diffusion"])
def model(request: pytest.FixtureRequest, tiny_checkpoint: Path) -> DogModel:
    """Every way of sampling z: the stage-1 checkpoint (its Gaussians) and the same with a diffusion prior."""
    folder = tiny_checkpoint if request.param == "gaussian" else request.getfixturevalue("tiny_diffusion_checkpoint")
    loaded = checkpoint.load(folder)[0]
    assert loaded.prior.kind == request.param
    return loaded


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1.0, -1.0, 0.0], "non-negative"),
        ([0.0, 0.0, 0.0], "all be zero"),
        ([float("nan"), 1.0, 0.0], "finite"),
    ],
)
def test_bad_weights_are_rejected(model, weights: list[float], message: str) -> None:
    with pytest.raises(LatentOpError, match=message):
        latent_ops.mix(model, torch.tensor(weights))


def test_huge_weights_are_normalised_without_overflow() -> None:
    weights = latent_ops.normalise_weights(torch.tensor([1e308, 1e308, 0.0], dtype=torch.float64))
    assert torch.allclose(weights, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))


def test_same_seed_same_pose_noise_across_mixes(model) -> None:
    """With one seed, two mixes differ only through the breed terms, never through the noise."""
    a = latent_ops.mix(model, torch.tensor([1.0, 0.0, 0.0]), seed=5)
    b = latent_ops.mix(model, torch.tensor([1.0, 0.0, 0.0]), seed=5)
    c = latent_ops.mix(model, torch.tensor([1.0, 0.0, 0.0]), seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_breeds_for_latent_prefers_the_breed_whose_prior_it_came_from(model) -> None:
    z = model.vae.prior_mean.cpu()
    assert torch.equal(latent_ops.breeds_for_latent(model, z).argmax(1), torch.arange(3))


def test_ancestry_is_a_sparse_deterministic_composition(model) -> None:
    photo = latent_ops.sample(model, 1, breed=1, seed=3)
    first = latent_ops.ancestry(model, photo, max_breeds=2)
    again = latent_ops.ancestry(model, photo, max_breeds=2)
    assert torch.equal(first.weights, again.weights)
    assert (first.weights >= 0).all() and abs(float(first.weights.sum()) - 1) < 1e-5
    assert int((first.weights > 0).sum()) <= 2
    assert 0 <= first.fit <= 1 and first.mahalanobis > 0
    assert first.mix_image.shape == (3, 64, 64)


def test_ancestry_without_a_breed_space_is_by_the_latent(model) -> None:
    photo = latent_ops.sample(model, 1, breed=1, seed=3)
    assert latent_ops.ancestry(model, photo, max_breeds=2).by == "latent"
    with pytest.raises(LatentOpError, match="by 'latent'"):
        latent_ops.ancestry(model, photo, by="identifier")
    with pytest.raises(LatentOpError, match="not 'dna'"):
        latent_ops.ancestry(model, photo, by="dna")


def test_transfer_keeps_the_pose(model) -> None:
    """The transferred dog is closer to the photo's reconstruction than random dogs of the target breed."""
    target = torch.tensor([0.0, 0.0, 1.0])
    photos = latent_ops.sample(model, 6, breed=0, seed=21)
    transferred = latent_ops.transfer(model, photos, target)
    own = latent_ops.reconstruct(model, photos)
    random_dogs = latent_ops.sample(model, 6, breed=2, seed=99)
    assert (transferred - own).pow(2).mean() < (random_dogs - own).pow(2).mean()


def test_morph_ends_are_the_endpoints(model) -> None:
    a = latent_ops.latent_endpoint(model, weights=torch.tensor([1.0, 0.0, 0.0]), seed=4)
    z = torch.randn(model.vae.cfg.latent_dim)
    b = latent_ops.latent_endpoint(model, latent=z)
    frames = latent_ops.morph(model, a, b, steps=5)
    assert frames.shape[0] == 5
    assert torch.allclose(frames[0], latent_ops.decode(model, *a)[0], atol=1e-6)
    assert torch.allclose(frames[-1], latent_ops.decode(model, *b)[0], atol=1e-6)
    with pytest.raises(LatentOpError, match="finite"):
        latent_ops.latent_endpoint(model, latent=torch.full((model.vae.cfg.latent_dim,), float("nan")))
    with pytest.raises(LatentOpError, match="at least 2"):
        latent_ops.morph(model, a, b, steps=1)


def test_ancestry_recovers_the_largest_component_of_a_known_mix() -> None:
    """A latent drawn from the 70/30 prior of two breeds is explained by a mix led by the 70 % breed."""
    vae = BreedVAE(VAEConfig(n_breeds=5, latent_dim=16, channels=(8, 8), classifier_channels=(8,), image_size=16))
    generator = torch.Generator().manual_seed(0)
    vae.prior_mean.copy_(3 * torch.randn(5, 16, generator=generator))  # well-separated breeds
    vae.prior_cholesky.copy_(0.5 * torch.eye(16).expand(5, -1, -1))
    model = DogModel(vae, GaussianPrior(vae))
    for major, minor in [(0, 3), (2, 1), (4, 0)]:
        weights = torch.zeros(5)
        weights[major], weights[minor] = 0.7, 0.3
        z = latent_ops.prior_latents(model, weights[None], torch.randn(1, 16, generator=generator))[0]
        found = latent_ops.ancestry_weights(model, z, max_breeds=2)
        assert int(found.argmax()) == major and set(found.nonzero().flatten().tolist()) == {major, minor}
        assert abs(float(found.sum()) - 1) < 1e-5 and (found >= 0).all()
        typical, distance = latent_ops.mix_typicality(model, z, found)
        assert typical > 0.01 and distance < 2  # the found mix explains its own sample


class SpyPrior(GaussianPrior):
    """The latent Gaussians, recording every likelihood call's conditions and probes in ``calls``."""

    def __init__(self, vae: BreedVAE, calls: list[tuple[torch.Tensor, int]]) -> None:
        super().__init__(vae)
        self.calls = calls

    def log_likelihood(self, z: torch.Tensor, weights: torch.Tensor, probes: int = 32) -> torch.Tensor:
        self.calls.append((weights.detach().clone(), probes))
        return super().log_likelihood(z, weights, probes)


def test_ancestry_shortlists_by_the_slope_then_screens_then_scores_only_the_best_precisely() -> None:
    """One call at the even mix of every breed (its slope shortlists SHORTLISTED_BREEDS), those screened with
    SCREEN_PROBES probes, the SCREENED_BREEDS best scored with PRECISE_PROBES, the support taken from those."""
    n = latent_ops.SHORTLISTED_BREEDS + 16
    vae = BreedVAE(VAEConfig(n_breeds=n, latent_dim=16, channels=(8, 8), classifier_channels=(8,), image_size=16))
    vae.prior_mean.copy_(3 * torch.randn(n, 16, generator=torch.Generator().manual_seed(1)))
    calls: list[tuple[torch.Tensor, int]] = []
    model = DogModel(vae, SpyPrior(vae, calls))
    z = vae.prior_mean[7] + 0.1 * torch.randn(16)
    found = latent_ops.ancestry_weights(model, z, max_breeds=2, steps=3)
    (even, probes), *rest = calls
    assert probes == latent_ops.SCREEN_PROBES and torch.allclose(even, torch.full((1, n), 1 / n))
    screened = torch.cat([w for w, p in rest if p == latent_ops.SCREEN_PROBES])
    precise = [w for w, p in rest if p == latent_ops.PRECISE_PROBES]
    assert len(screened) == latent_ops.SHORTLISTED_BREEDS and (screened.sum(1) == 1).all()  # pure breeds only
    assert screened[:, 7].sum() == 1  # the slope kept the breed z was drawn from
    assert sum(len(w) for w in precise[:-3]) == latent_ops.SCREENED_BREEDS  # then one mix per Adam step
    assert int(found.argmax()) == 7


def test_breeds_for_latent_is_bayes_over_the_breed_gaussians() -> None:
    """Against torch.distributions, with full covariances (the solve is batched per breed, not per latent)."""
    vae = BreedVAE(VAEConfig(n_breeds=5, latent_dim=16, channels=(8, 8), classifier_channels=(8,), image_size=16))
    torch.manual_seed(0)
    factors = torch.randn(5, 16, 16) * 0.3 + torch.eye(16)
    with torch.no_grad():
        vae.prior_cholesky.copy_(torch.linalg.cholesky(factors @ factors.transpose(1, 2)))
        vae.prior_mean.copy_(torch.randn(5, 16))
    model = DogModel(vae, GaussianPrior(vae))
    z = torch.randn(7, 16)
    normals = [
        torch.distributions.MultivariateNormal(vae.prior_mean[b], scale_tril=vae.prior_cholesky[b]) for b in range(5)
    ]
    log_probs = torch.stack([normal.log_prob(z) for normal in normals], dim=1)
    assert torch.allclose(latent_ops.breeds_for_latent(model, z), log_probs.softmax(1), atol=1e-5)


def test_with_a_mix_reader_ancestry_scores_only_the_readers_likeliest_breeds() -> None:
    """The reader replaces the slope and the screen: its READ_BREEDS likeliest breeds are the only ones scored,
    precisely, and the fit starts from its weights."""
    n = 20
    vae = BreedVAE(VAEConfig(n_breeds=n, latent_dim=16, channels=(8, 8), classifier_channels=(8,), image_size=16))
    vae.prior_mean.copy_(3 * torch.randn(n, 16, generator=torch.Generator().manual_seed(1)))
    calls: list[tuple[torch.Tensor, int]] = []

    def reader_favouring(breeds: list[int]) -> MixReader:
        reader = MixReader(ReaderConfig(channels=8), n, vae.cfg.latent_shape).eval()
        with torch.no_grad():
            read_out = reader.net[-1]
            read_out.weight.zero_()
            read_out.bias.fill_(-10.0)
            read_out.bias[breeds] = 5.0
        return reader

    z = vae.prior_mean[7] + 0.1 * torch.randn(16)
    prior = SpyPrior(vae, calls)
    prior.reader = reader_favouring([1, 2, 3, 4, 5, 6])  # type: ignore[attr-defined]
    found = latent_ops.ancestry_weights(DogModel(vae, prior), z, max_breeds=2, steps=3)
    assert all(probes == latent_ops.PRECISE_PROBES for _, probes in calls)  # no slope, no screen
    scored = torch.cat([w for w, _ in calls[:2]])  # 4 breeds a call at 32 probes
    assert sorted(scored.argmax(1).tolist()) == [1, 2, 3, 4, 5, 6] and (scored.max(1).values == 1).all()
    assert set(found.nonzero().flatten().tolist()) <= {1, 2, 3, 4, 5, 6}  # breed 7 never came up
    prior.reader = reader_favouring([7, 2, 3, 4, 5, 6])  # type: ignore[attr-defined]
    assert int(latent_ops.ancestry_weights(DogModel(vae, prior), z, max_breeds=2, steps=3).argmax()) == 7
