from __future__ import annotations

import pytest
import torch

from model.autoencoder import BreedVAE, VAEConfig

SMALL = dict(
    n_breeds=4, image_size=32, latent_dim=6, breed_embed_dim=8, channels=(8, 16, 16), classifier_channels=(8, 16)
)


def test_shapes() -> None:
    model = BreedVAE(VAEConfig(**SMALL))
    x = torch.rand(5, 3, 32, 32)
    mu, log_var = model.encode(x)
    assert mu.shape == log_var.shape == (5, 6)
    assert model.breed_logits(x).shape == (5, 4)
    out = model.decode(mu, torch.softmax(torch.randn(5, 4), dim=1))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1


def test_spatial_latent_is_the_flattened_feature_map() -> None:
    cfg = VAEConfig(**{**SMALL, "latent_channels": 2, "latent_dim": 2 * 4 * 4})  # 32 px / 2**3 = 4x4
    model = BreedVAE(cfg).eval()
    x = torch.rand(3, 3, 32, 32)
    mu, log_var = model.encode(x)
    assert mu.shape == log_var.shape == (3, 32) and cfg.latent_shape == (2, 4, 4)
    assert model.decode(mu, torch.eye(4)[:3]).shape == x.shape
    # z is the map's first C channels, channel-major, so /encode output can be viewed as (C, side, side).
    stats = model.encoder.to_stats(model.encoder.trunk(x * 2 - 1))
    assert torch.equal(mu.view(3, 2, 4, 4), stats[:, :2])


def test_the_plain_baseline_decoder_ignores_the_breed() -> None:
    model = BreedVAE(VAEConfig(**{**SMALL, "breed_embed_dim": 0})).eval()
    z = torch.randn(2, 6)
    assert torch.equal(model.decode(z, torch.eye(4)[[0, 1]]), model.decode(z, torch.eye(4)[[2, 3]]))


def test_config_round_trip_and_validation() -> None:
    cfg = VAEConfig(**SMALL)
    assert VAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown VAEConfig fields"):
        VAEConfig.from_dict({**cfg.to_dict(), "diffusion_guidance": 1})
    with pytest.raises(ValueError, match="divisible"):
        VAEConfig(image_size=30, channels=(8, 16))
    with pytest.raises(ValueError, match="has latent_dim 32, got 6"):
        VAEConfig(**{**SMALL, "latent_channels": 2})


def test_fit_latent_gaussians_recovers_breed_means_and_densities() -> None:
    model = BreedVAE(VAEConfig(**SMALL))
    torch.manual_seed(0)
    centres = torch.randn(4, 6) * 5
    breeds = torch.arange(400) % 4
    means = centres[breeds] + torch.randn(400, 6) * 0.5
    model.fit_latent_gaussians(means, breeds)
    assert torch.allclose(model.prior_mean, centres, atol=0.2)
    cov = model.prior_cholesky[0] @ model.prior_cholesky[0].T
    assert torch.allclose(cov.diagonal(), torch.full((6,), 0.25), atol=0.1)
    densities = model.gaussian_log_density(centres[2], torch.eye(4))
    assert int(densities.argmax()) == 2


def test_a_shared_covariance_is_the_pooled_one_for_every_breed() -> None:
    """shared_covariance keeps one factor (1, d, d): densities equal those of per-breed factors all set to it."""
    torch.manual_seed(0)
    breeds = torch.arange(400) % 4
    means = torch.randn(4, 6)[breeds] * 3 + torch.randn(400, 6) * 0.5
    shared, full = BreedVAE(VAEConfig(**SMALL, shared_covariance=True)), BreedVAE(VAEConfig(**SMALL))
    shared.fit_latent_gaussians(means, breeds)
    full.fit_latent_gaussians(means, breeds)
    assert shared.prior_cholesky.shape == (1, 6, 6) and full.prior_cholesky.shape == (4, 6, 6)
    assert torch.equal(shared.prior_cholesky[0], full.pooled_cholesky)
    full.prior_cholesky.copy_(full.pooled_cholesky.expand(4, -1, -1))
    weights = torch.tensor([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.1, 0.2, 0.3, 0.4]])
    assert torch.allclose(shared.gaussian_log_density(means[0], weights), full.gaussian_log_density(means[0], weights))
    assert torch.allclose(shared.mixed_cholesky(weights), full.mixed_cholesky(weights))
