from __future__ import annotations

from pathlib import Path

import torch

from model import checkpoint, latent_ops
from model.autoencoder import BreedVAE, VAEConfig
from model.diffusion import DiffusionConfig, LatentDiffusion
from model.photo_prior import PhotoPrior
from model.prior import DiffusionPrior, DogModel
from model.sampler import SamplerSettings


def fitted_prior(dim: int = 4) -> tuple[PhotoPrior, torch.Tensor, torch.Tensor]:
    """A photo prior fitted on two breeds' synthetic 'embeddings' (16 numbers, breed 1 shifted along one axis)."""
    torch.manual_seed(0)
    breeds = torch.arange(2000) % 2
    features = torch.randn(2000, 16) * torch.linspace(3, 0.5, 16)
    features[:, 0] += 6 * breeds
    prior = PhotoPrior(dim, 2, features=16)
    prior.fit(features, breeds)
    return prior, features, breeds


def test_fit_whitens_and_keeps_each_breeds_place() -> None:
    prior, features, breeds = fitted_prior()
    x = prior.whiten(features)
    assert x.shape == (2000, 4)
    assert torch.allclose(x.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(torch.cov(x.T), torch.eye(4), atol=1e-3)  # whitened over all training photos
    for breed in (0, 1):
        assert torch.allclose(prior.breed_mean[breed], x[breeds == breed].mean(0), atol=1e-4)
    # The breed axis survives the reduction: the breeds' means lie far apart in the whitened numbers.
    assert (prior.breed_mean[0] - prior.breed_mean[1]).norm() > 1.3  # 6 apart at a spread of sqrt(9 + 9)


def test_sample_draws_each_breed_and_blends_mixes() -> None:
    prior, features, breeds = fitted_prior()
    x = prior.whiten(features)
    torch.manual_seed(1)
    noise = torch.randn(4000, 4)
    pure = prior.sample(noise, torch.tensor([[0.0, 1.0]]).expand(4000, -1))
    assert torch.allclose(pure.mean(0), x[breeds == 1].mean(0), atol=0.1)
    assert torch.allclose(torch.cov(pure.T), torch.cov(x[breeds == 1].T), atol=0.15)
    # A 50/50 mix (weights need not sum to 1) sits halfway, and one noise is one place in every breed's spread.
    half = prior.sample(torch.zeros(1, 4), torch.tensor([[2.0, 2.0]]))
    assert torch.allclose(half[0], prior.breed_mean.mean(0), atol=1e-5)
    assert torch.allclose(
        prior.mean(torch.tensor([[1.0, 3.0]]))[0], 0.25 * prior.breed_mean[0] + 0.75 * prior.breed_mean[1]
    )


def test_log_density_and_distance_are_those_of_the_mixed_gaussian() -> None:
    prior, features, _ = fitted_prior()
    x = prior.whiten(features[:3])
    weights = torch.tensor([[1.0, 0.0], [0.3, 0.7], [1.0, 1.0]])
    mean = weights / weights.sum(1, keepdim=True) @ prior.breed_mean
    covariance = torch.einsum("nb,bij->nij", weights / weights.sum(1, keepdim=True), prior.breed_covariance)
    expected = torch.distributions.MultivariateNormal(mean, covariance)
    assert torch.allclose(prior.log_density(x, weights), expected.log_prob(x), atol=1e-4)
    squared = torch.einsum("ni,nij,nj->n", x - mean, torch.linalg.inv(covariance), x - mean)
    assert torch.allclose(prior.distance(x, weights), squared, rtol=1e-4)
    # One embedding against many mixes broadcasts.
    assert prior.log_density(x[0], weights).shape == (3,)


def test_breed_space_ancestry_recovers_a_known_mix() -> None:
    """An embedding at the 70/30 mix of two of five breeds is answered as that mix, led by the 70 % breed."""
    torch.manual_seed(0)
    breeds = torch.arange(5000) % 5
    features = torch.randn(5000, 24) + 4 * torch.nn.functional.one_hot(breeds, 24).float()
    space = PhotoPrior(8, 5, features=24)
    space.fit(features, breeds)
    x = space.mean(torch.tensor([[0.0, 0.7, 0.0, 0.3, 0.0]]))[0]
    weights = latent_ops.breed_space_weights(space, x, max_breeds=3)
    assert int(weights.argmax()) == 1 and weights[3] > 0.15 and int((weights > 0).sum()) <= 3
    assert abs(float(weights.sum()) - 1) < 1e-5
    assert torch.equal(weights, latent_ops.breed_space_weights(space, x, max_breeds=3))  # deterministic
    one = latent_ops.breed_space_weights(space, space.breed_mean[2], max_breeds=1)
    assert torch.equal(one, torch.nn.functional.one_hot(torch.tensor(2), 5).float())


def test_whitening_a_few_photos_stays_finite() -> None:
    """Fewer photos than features (a tiny data set) leave directions without spread: no blow-up, a usable density."""
    torch.manual_seed(0)
    features, breeds = torch.randn(12, 40), torch.arange(12) % 3
    space = PhotoPrior(16, 3, features=40)
    space.fit(features, breeds)
    assert torch.isfinite(space.log_density(space.whiten(features[:1])[0], torch.eye(3))).all()


def test_a_zero_photo_condition_leaves_a_carried_on_prior_unchanged() -> None:
    """The photo condition starts at zero, so a breed-only denoiser carried on with it (training.prior --prior-from)
    predicts what it did before its first step."""
    shape = (1, 4, 4)
    old = LatentDiffusion(DiffusionConfig(channels=16, blocks=2), 3, shape)
    with torch.no_grad():
        old.conv_out[-1].weight.normal_()  # an untrained denoiser predicts zero whatever its condition
    new = LatentDiffusion(DiffusionConfig(channels=16, blocks=2, photo_dim=5), 3, shape)
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    assert missing == ["photo_embedding.weight"] and not unexpected
    x, t, w = torch.randn(6, 16), torch.rand(6), torch.eye(3)[[0, 1, 2, 0, 1, 2]]
    with torch.no_grad():
        before = old.velocity(x, t, w)
        assert torch.equal(new.velocity(x, t, torch.cat([w, torch.randn(6, 5)], 1)), before)
        new.photo_embedding.weight.fill_(0.1)  # once trained, the photo condition changes the prediction
        assert not torch.allclose(new.velocity(x, t, torch.cat([w, torch.randn(6, 5)], 1)), before)


def photo_model() -> DogModel:
    vae = BreedVAE(VAEConfig(n_breeds=2, image_size=16, latent_dim=16, latent_channels=1, channels=(8, 8)))
    denoiser = LatentDiffusion(DiffusionConfig(channels=16, blocks=2, photo_dim=4), 2, (1, 4, 4))
    with torch.no_grad():
        denoiser.photo_embedding.weight.normal_()
        denoiser.conv_out[-1].weight.normal_()
    prior, _, _ = fitted_prior()
    return DogModel(vae, DiffusionPrior(denoiser, photo_prior=prior), SamplerSettings(steps=4, mix_strength=2)).eval()


def test_sampling_draws_the_photo_condition_first_from_the_seed() -> None:
    model = photo_model()
    settings = model.sampling
    assert latent_ops.noise_dim(model) == 4 + 16  # the photo's numbers, then the latent's
    z, _ = latent_ops.sample_latents(model, 3, breed=1, seed=5)
    assert z.shape == (3, 16) and torch.equal(z, latent_ops.sample_latents(model, 3, breed=1, seed=5)[0])
    noise = torch.randn(2, latent_ops.noise_dim(model))
    other_photo = noise.clone()
    other_photo[:, :4] += 1  # another place in the breed's spread of photos: another dog from the same latent noise
    weights = torch.tensor([[1.0, 0.0]]).expand(2, -1)
    with torch.no_grad():
        assert not torch.allclose(
            model.prior.sample(noise, weights, settings), model.prior.sample(other_photo, weights, settings)
        )
        # log_likelihood scores each mix at its mean photo: finite, one per mix
        scores = model.prior.log_likelihood(z[0], torch.eye(2), probes=4)
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_checkpoint_keeps_the_photo_prior(tmp_path: Path) -> None:
    model = photo_model()
    card = {"breeds": [{"name": "a", "photos": 1}, {"name": "b", "photos": 1}]}
    checkpoint.save(model, card, tmp_path / "ck")
    loaded, saved = checkpoint.load(tmp_path / "ck")
    assert saved["prior"]["photo_prior"] == {"dim": 4, "features": 16}
    for name in ("breed_mean", "breed_covariance", "projection", "center"):
        assert torch.equal(getattr(loaded.prior.photo_prior, name), getattr(model.prior.photo_prior, name))
    assert torch.equal(latent_ops.sample(loaded, 2, breed=0, seed=3), latent_ops.sample(model, 2, breed=0, seed=3))
