"""model/breed_space.py: the identifier's Gaussians per breed over whitened trunk embeddings (ancestry's space)."""

from __future__ import annotations

import torch

from model import latent_ops
from model.breed_space import BreedSpace


def fitted_space(dim: int = 4) -> tuple[BreedSpace, torch.Tensor, torch.Tensor]:
    """A breed space fitted on two breeds' synthetic 'embeddings' (16 numbers, breed 1 shifted along one axis)."""
    torch.manual_seed(0)
    breeds = torch.arange(2000) % 2
    features = torch.randn(2000, 16) * torch.linspace(3, 0.5, 16)
    features[:, 0] += 6 * breeds
    space = BreedSpace(dim, 2, features=16)
    space.fit(features, breeds)
    return space, features, breeds


def test_fit_whitens_and_keeps_each_breeds_place() -> None:
    space, features, breeds = fitted_space()
    x = space.whiten(features)
    assert x.shape == (2000, 4)
    assert torch.allclose(x.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(torch.cov(x.T), torch.eye(4), atol=1e-3)  # whitened over all training photos
    for breed in (0, 1):
        assert torch.allclose(space.breed_mean[breed], x[breeds == breed].mean(0), atol=1e-4)
    # The breed axis survives the reduction: the breeds' means lie far apart in the whitened numbers.
    assert (space.breed_mean[0] - space.breed_mean[1]).norm() > 1.3  # 6 apart at a spread of sqrt(9 + 9)


def test_log_density_and_distance_are_those_of_the_mixed_gaussian() -> None:
    space, features, _ = fitted_space()
    x = space.whiten(features[:3])
    weights = torch.tensor([[1.0, 0.0], [0.3, 0.7], [1.0, 1.0]])
    mean = weights / weights.sum(1, keepdim=True) @ space.breed_mean
    covariance = torch.einsum("nb,bij->nij", weights / weights.sum(1, keepdim=True), space.breed_covariance)
    expected = torch.distributions.MultivariateNormal(mean, covariance)
    assert torch.allclose(space.log_density(x, weights), expected.log_prob(x), atol=1e-4)
    squared = torch.einsum("ni,nij,nj->n", x - mean, torch.linalg.inv(covariance), x - mean)
    assert torch.allclose(space.distance(x, weights), squared, rtol=1e-4)
    # One embedding against many mixes broadcasts.
    assert space.log_density(x[0], weights).shape == (3,)


def test_breed_space_ancestry_recovers_a_known_mix() -> None:
    """An embedding at the 70/30 mix of two of five breeds is answered as that mix, led by the 70 % breed."""
    torch.manual_seed(0)
    breeds = torch.arange(5000) % 5
    features = torch.randn(5000, 24) + 4 * torch.nn.functional.one_hot(breeds, 24).float()
    space = BreedSpace(8, 5, features=24)
    space.fit(features, breeds)
    x = torch.tensor([0.0, 0.7, 0.0, 0.3, 0.0]) @ space.breed_mean  # the 70/30 mix's mean
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
    space = BreedSpace(16, 3, features=40)
    space.fit(features, breeds)
    assert torch.isfinite(space.log_density(space.whiten(features[:1])[0], torch.eye(3))).all()
