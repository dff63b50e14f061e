from __future__ import annotations

import math

import pytest
import torch

from model.vae import BreedVAE, Discriminator, VAEConfig

SMALL = dict(n_breeds=4, image_size=32, latent_dim=6, breed_embed_dim=8, channels=(8, 16, 16), classifier_channels=(8, 16))


def test_shapes_and_finite_loss() -> None:
    model = BreedVAE(VAEConfig(**SMALL))
    x = torch.rand(5, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3, 0])
    mu, log_var = model.encode(x)
    assert mu.shape == log_var.shape == (5, 6)
    assert model.breed_logits(x).shape == (5, 4)
    weights = torch.softmax(torch.randn(5, 4), dim=1)
    out = model.decode(mu, weights)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    terms = model.loss(x, y)
    assert torch.isfinite(terms.loss)
    assert terms.kl_per_dim.shape == (6,)
    terms.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_spatial_latent_is_the_flattened_feature_map() -> None:
    cfg = VAEConfig(**{**SMALL, "latent_channels": 2, "latent_dim": 2 * 4 * 4})  # 32 px / 2**3 = 4x4
    model = BreedVAE(cfg).eval()
    x = torch.rand(3, 3, 32, 32)
    mu, log_var = model.encode(x)
    assert mu.shape == log_var.shape == (3, 32)
    weights = torch.eye(4)[:3]
    out = model.decode(mu, weights)
    assert out.shape == x.shape
    # z is the map's first C channels, channel-major, so /encode output can be viewed as (C, side, side).
    stats = model.encoder.to_stats(model.encoder.trunk(x * 2 - 1))
    assert torch.equal(mu.view(3, 2, 4, 4), stats[:, :2])
    terms = model.loss(x, torch.tensor([0, 1, 2]))
    terms.loss.backward()
    assert terms.kl_per_dim.shape == (32,) and torch.isfinite(terms.loss)


def test_generated_term_does_not_train_the_breed_head() -> None:
    cfg = VAEConfig(**{**SMALL, "breed_weight": 0.0, "generated_fraction": 1.0})
    model = BreedVAE(cfg)
    model.loss(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])).loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.breed_head.parameters())
    assert model.decoder.from_latent.weight.grad.abs().sum() > 0


def test_adversarial_loss_trains_the_decoder_only() -> None:
    model = BreedVAE(VAEConfig(**SMALL))
    discriminator = Discriminator(4, channels=(8, 16))
    discriminator.requires_grad_(False)
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    loss, generated, logs = model.adversarial_loss(x, y, discriminator, adversarial_weight=0.5)
    loss.backward()
    assert generated.shape == x.shape and not generated.requires_grad
    assert torch.isfinite(loss) and logs["balance"] >= 0
    assert model.decoder.head[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder.parameters())  # z stays the frozen encoder's


def test_adversarial_loss_decodes_the_given_prior_latents() -> None:
    model = BreedVAE(VAEConfig(**SMALL))
    discriminator = Discriminator(4, channels=(8, 16))
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    z = torch.randn(3, model.cfg.latent_dim)
    _, generated, _ = model.adversarial_loss(x, y, discriminator, 0.5, prior_latents=z)
    with torch.no_grad():
        expected = model.decode(z, torch.eye(4)[y[3:]])
    assert torch.allclose(generated[3:], expected, atol=1e-6)
    with pytest.raises(ValueError, match="prior_latents"):
        model.adversarial_loss(x, y, discriminator, 0.5, prior_latents=z[:2])


def test_projection_discriminator_scores_depend_on_the_breed() -> None:
    discriminator = Discriminator(4, channels=(8, 16))
    x = torch.rand(2, 3, 32, 32)
    eye = torch.eye(4)
    assert not torch.allclose(discriminator(x, eye[[0, 0]]), discriminator(x, eye[[1, 1]]))


def test_config_round_trip_and_validation() -> None:
    cfg = VAEConfig(**SMALL)
    assert VAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown VAEConfig fields"):
        VAEConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        VAEConfig(image_size=30, channels=(8, 16))
    with pytest.raises(ValueError, match="latent_prior"):
        VAEConfig(latent_prior="flow")
    with pytest.raises(ValueError, match="has latent_dim 32, got 6"):
        VAEConfig(**{**SMALL, "latent_channels": 2})


def test_fit_latent_prior_recovers_breed_means() -> None:
    model = BreedVAE(VAEConfig(**SMALL))
    torch.manual_seed(0)
    centres = torch.randn(4, 6) * 5
    breeds = torch.arange(400) % 4
    means = centres[breeds] + torch.randn(400, 6) * 0.5
    model.fit_latent_prior(means, breeds)
    assert torch.allclose(model.prior_mean, centres, atol=0.2)
    cov = model.prior_cholesky[0] @ model.prior_cholesky[0].T
    assert torch.allclose(cov.diagonal(), torch.full((6,), 0.25), atol=0.1)


def test_two_stage_prior_learns_where_the_latents_lie() -> None:
    """A second-stage VAE fitted to latents on a curve in 6-d samples near that curve, per breed."""
    cfg = VAEConfig(**{**SMALL, "latent_prior": "two_stage", "prior_noise_dim": 2, "prior_hidden": 64})
    model = BreedVAE(cfg)
    prior = model.latent_prior
    assert prior is not None and BreedVAE(VAEConfig(**SMALL)).latent_prior is None
    torch.manual_seed(0)
    t = torch.rand(2000, 1) * 6 - 3
    breeds = torch.randint(0, 4, (2000,))
    curve = torch.cat([t, t.sin(), t.cos(), 0.5 * t, -t, t.pow(2) / 4], dim=1) + breeds[:, None] * 2.0
    weights = torch.nn.functional.one_hot(breeds, 4).float()
    prior.fit_standardisation(curve)
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    first = None
    for step in range(600):
        idx = torch.randint(0, 2000, (128,))
        loss, _ = prior.loss(curve[idx], weights[idx])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 5
    with torch.no_grad():
        z = prior(torch.randn(500, 2), torch.eye(4)[[1] * 500])
    on_curve = curve[breeds == 1]
    gaussian = on_curve.mean(0) + torch.randn(500, 6) * on_curve.std(0)  # what a diagonal Gaussian would give
    def distance_to_data(points: torch.Tensor) -> float:
        return torch.cdist(points, on_curve).min(1).values.median().item()
    assert distance_to_data(z) < 0.5 * distance_to_data(gaussian)


def test_two_stage_residual_noise_is_scaled_by_the_learned_output_std() -> None:
    cfg = VAEConfig(**{**SMALL, "latent_prior": "two_stage", "prior_noise_dim": 2, "prior_hidden": 16})
    prior = BreedVAE(cfg).latent_prior
    with torch.no_grad():
        prior.log_gamma.fill_(math.log(0.5))
        prior.z_scale.fill_(2.0)
    u, w, e = torch.randn(3, 2), torch.eye(4)[:3], torch.randn(3, 6)
    with torch.no_grad():
        assert torch.allclose(prior(u, w, e) - prior(u, w), e * 0.5 * 2.0, atol=1e-5)


def _diffusion_model(**overrides: object) -> BreedVAE:
    cfg = {**SMALL, "latent_channels": 1, "latent_dim": 16, "channels": (8, 16, 16), "latent_prior": "diffusion",
           "diffusion_channels": 32, "diffusion_blocks": 2, **overrides}
    return BreedVAE(VAEConfig(**cfg))


@pytest.mark.parametrize("attention", [False, True])
def test_diffusion_prior_learns_each_breeds_latents(attention: bool) -> None:
    """A diffusion prior trained on two breeds' well-separated latents samples each breed near its own data,
    and its denoising error (the likelihood behind ancestry) names the breed a new latent came from."""
    from model import latent_ops
    from model.vae import LatentDiffusion

    model = _diffusion_model(diffusion_attention=attention, n_breeds=2)
    prior = model.latent_prior
    assert isinstance(prior, LatentDiffusion) and len(prior.attention) == (1 if attention else 0)
    torch.manual_seed(0)
    centres = torch.randn(2, 16) * 3
    breeds = torch.randint(0, 2, (1000,))
    z = centres[breeds] + 0.3 * torch.randn(1000, 16)
    weights = torch.nn.functional.one_hot(breeds, 2).float()
    prior.fit_standardisation(z)
    opt = torch.optim.Adam(prior.parameters(), lr=2e-3)
    for _ in range(400):
        idx = torch.randint(0, 1000, (128,))
        loss, _ = prior.loss(z[idx], weights[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        for breed in (0, 1):
            for eta in (0.0, 1.0):  # deterministic DDIM, and DDIM with DDPM's fresh noise at every step
                noise = torch.randn(200, prior.noise_dim(16, eta))
                samples = prior(noise, torch.eye(2)[[breed] * 200], steps=16, guidance=1.0, eta=eta)
                to_own = (samples - centres[breed]).norm(dim=1).median()
                to_other = (samples - centres[1 - breed]).norm(dim=1).median()
                assert to_own < 0.3 * to_other
    flat_belief = torch.full((2,), 0.5)  # ancestry of a diffusion checkpoint must not need the breed head
    for breed in (0, 1):
        new_latent = centres[breed] + 0.3 * torch.randn(16)
        with torch.no_grad():
            errors = prior.denoising_error(new_latent, torch.eye(2))
        assert int(errors.argmin()) == breed
        found = latent_ops.ancestry_weights(model, new_latent, flat_belief, max_breeds=2)
        assert int(found.argmax()) == breed and abs(float(found.sum()) - 1) < 1e-5


def test_attention_starts_as_the_identity() -> None:
    """Its output projection starts at zero, so adding attention leaves an untrained denoiser unchanged."""
    from model.vae import SelfAttention

    layer = SelfAttention(16)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(layer(x), x)
    with torch.no_grad():
        layer.proj.weight.normal_()
    assert layer(x).shape == x.shape and not torch.equal(layer(x), x)
    with pytest.raises(ValueError, match="heads"):
        SelfAttention(18)


def test_diffusion_sampling_is_deterministic_and_guidance_changes_it() -> None:
    model = _diffusion_model().eval()
    prior = model.latent_prior
    with torch.no_grad():  # a random denoiser whose output layer is not zero, so guidance has an effect
        prior.conv_out[-1].weight.normal_(0, 0.1)
    noise, weights = torch.randn(3, 16), torch.eye(4)[:3]
    with torch.no_grad():
        a = prior(noise, weights, steps=4, guidance=2.0)
        assert a.shape == (3, 16) and torch.equal(a, prior(noise, weights, steps=4, guidance=2.0))
        assert not torch.allclose(a, prior(noise, weights, steps=4, guidance=1.0))
        # Guidance in a limited interval: none of the 4 steps (t = 1, .75, .5, .25) starts at t <= 0.2, all at t <= 1.
        assert torch.equal(prior(noise, weights, steps=4, guidance=2.0, guidance_max_t=0.2),
                           prior(noise, weights, steps=4, guidance=1.0))
        assert torch.equal(prior(noise, weights, steps=4, guidance=2.0, guidance_max_t=1.0), a)
        halfway = prior(noise, weights, steps=4, guidance=2.0, guidance_max_t=0.6)  # guided at t = .5 and .25 only
        assert not torch.allclose(halfway, a) and not torch.allclose(halfway, prior(noise, weights, steps=4, guidance=1.0))


def test_guidance_rescale_restores_the_conditional_spread_and_keeps_the_direction() -> None:
    """Lin et al. (2024): rescale 1 gives each guided row the conditional row's standard deviation, in the guided
    direction; 0 is plain guidance; values between blend the two; without guidance it changes nothing."""
    from model.vae import LatentDiffusion

    v_cond, v_uncond = torch.randn(5, 16), torch.randn(5, 16)
    plain = v_uncond + 3.0 * (v_cond - v_uncond)
    assert torch.equal(LatentDiffusion.classifier_free(v_cond, v_uncond, 3.0), plain)
    full = LatentDiffusion.classifier_free(v_cond, v_uncond, 3.0, rescale=1.0)
    assert torch.allclose(full.std(1), v_cond.std(1), atol=1e-5)
    ratio = full / plain  # one positive factor per row: the same direction, another length
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4) and bool((ratio > 0).all())
    assert torch.allclose(LatentDiffusion.classifier_free(v_cond, v_uncond, 3.0, rescale=0.5), (plain + full) / 2, atol=1e-5)
    assert torch.allclose(LatentDiffusion.classifier_free(v_cond, v_uncond, 1.0, rescale=1.0), v_cond, atol=1e-5)

    model = _diffusion_model().eval()
    prior = model.latent_prior
    with torch.no_grad():
        prior.conv_out[-1].weight.normal_(0, 0.1)
    noise, weights = torch.randn(3, 16), torch.eye(4)[:3]
    with torch.no_grad():
        plain_samples = prior(noise, weights, steps=4, guidance=3.0)
        rescaled = prior(noise, weights, steps=4, guidance=3.0, guidance_rescale=0.5)
        assert torch.isfinite(rescaled).all() and not torch.allclose(rescaled, plain_samples)
        # The latent operations sample with the stored rescale.
        model.cfg.diffusion_sampling_steps, model.cfg.diffusion_guidance, model.cfg.diffusion_guidance_rescale = 4, 3.0, 0.5
        from model import latent_ops
        assert torch.allclose(latent_ops.prior_latents(model, weights, noise), rescaled)
    for share in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="diffusion_guidance_rescale"):
            _diffusion_model(diffusion_guidance_rescale=share)


def test_stochastic_ddim_takes_its_fresh_noise_from_the_starting_noise() -> None:
    """eta > 0 adds fresh noise at every step but the last; it comes from the given noise, so a seed still fixes the sample."""
    model = _diffusion_model().eval()
    prior = model.latent_prior
    with torch.no_grad():
        prior.conv_out[-1].weight.normal_(0, 0.1)
    weights = torch.eye(4)[:3]
    assert prior.noise_dim(4, 0.0) == 16 and prior.noise_dim(4, 1.0) == 4 * 16  # the start, then 3 steps' fresh noise
    noise = torch.randn(3, 4 * 16)
    with torch.no_grad():
        a = prior(noise, weights, steps=4, guidance=2.0, eta=1.0)
        assert a.shape == (3, 16) and torch.equal(a, prior(noise, weights, steps=4, guidance=2.0, eta=1.0))
        other_fresh = torch.cat([noise[:, :16], torch.randn(3, 3 * 16)], dim=1)
        assert not torch.allclose(a, prior(other_fresh, weights, steps=4, guidance=2.0, eta=1.0))
        assert not torch.allclose(a, prior(noise, weights, steps=4, guidance=2.0, eta=0.5))
        # eta 0 is plain deterministic DDIM: only the first latent of noise is used.
        assert torch.equal(prior(noise[:, :16], weights, steps=4, guidance=2.0, eta=0.0),
                           prior(noise[:, :16], weights, steps=4, guidance=2.0))
        with pytest.raises(ValueError, match="64 noise numbers"):
            prior(noise[:, :16], weights, steps=4, guidance=2.0, eta=1.0)
    with pytest.raises(ValueError, match="diffusion_eta"):
        _diffusion_model(diffusion_eta=1.5)


def test_autoguidance_pushes_away_from_the_guide_and_weight_one_ignores_it() -> None:
    """v = v_guide + w (v - v_guide) at every step: a guide equal to the model changes nothing, weight 1 ignores the
    guide, another guide with w > 1 moves the samples; the guide is a smaller denoiser of the config's own size."""
    from model import latent_ops
    from model.vae import LatentDiffusion

    model = _diffusion_model(diffusion_guide_channels=8, diffusion_guide_blocks=1).eval()
    prior, guide = model.latent_prior, model.guide_prior
    assert isinstance(guide, LatentDiffusion) and len(guide.blocks) == 1 and guide.conv_in.out_channels == 8
    assert not any(k.startswith("guide_prior.") for k in _diffusion_model().state_dict())  # no guide by default
    with torch.no_grad():
        prior.conv_out[-1].weight.normal_(0, 0.1)
        guide.conv_out[-1].weight.normal_(0, 0.1)
    noise, weights = torch.randn(3, 4 * 16), torch.eye(4)[:3]
    with torch.no_grad():
        plain = prior(noise, weights, steps=4, guidance=2.0, eta=1.0)
        assert torch.equal(prior(noise, weights, steps=4, guidance=2.0, eta=1.0, guide=guide, autoguidance=1.0), plain)
        pushed = prior(noise, weights, steps=4, guidance=2.0, eta=1.0, guide=guide, autoguidance=2.0)
        assert pushed.shape == plain.shape and not torch.allclose(pushed, plain)
        # A guide that errs exactly as the model does has nothing to push away from.
        assert torch.allclose(prior(noise, weights, steps=4, guidance=2.0, eta=1.0, guide=prior, autoguidance=3.0), plain, atol=1e-5)
        # The latent operations sample with the stored weight and the model's guide.
        model.cfg.diffusion_sampling_steps, model.cfg.diffusion_guidance, model.cfg.diffusion_eta = 4, 2.0, 1.0
        model.cfg.diffusion_autoguidance = 2.0
        assert torch.allclose(latent_ops.prior_latents(model, weights, noise), pushed)
    for weight in (0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="diffusion_autoguidance"):
            _diffusion_model(diffusion_autoguidance=weight)
    for scale in (-1.0, float("inf")):
        with pytest.raises(ValueError, match="diffusion_guidance"):
            _diffusion_model(diffusion_guidance=scale)


def test_discriminator_guidance_climbs_the_discriminators_logit() -> None:
    """Kim et al. (2023): the gradient of the discriminator's logit, times the weight, is added to the score at every
    step but the first, so samples move to where the discriminator says "real"; weight 0 ignores it."""
    from model import latent_ops
    from model.vae import LatentDiscriminator

    model = _diffusion_model(diffusion_discriminator_channels=8, diffusion_discriminator_blocks=1).eval()
    prior, discriminator = model.latent_prior, model.latent_discriminator
    assert isinstance(discriminator, LatentDiscriminator) and len(discriminator.blocks) == 1
    assert not any(k.startswith("latent_discriminator.") for k in _diffusion_model().state_dict())  # none by default
    with torch.no_grad():
        prior.conv_out[-1].weight.normal_(0, 0.1)
    noise, weights = torch.randn(3, 4 * 16), torch.eye(4)[:3]
    x_t, t = torch.randn(3, 16), torch.full((3,), 0.5)
    assert discriminator(x_t, t, weights).shape == (3,)

    class Towards(torch.nn.Module):  # logit -|x - target|^2 / 2: "real" means near the target
        def __init__(self, target: torch.Tensor) -> None:
            super().__init__()
            self.target = target

        def forward(self, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return -(x - self.target).pow(2).sum(1) / 2

        log_ratio_gradient = LatentDiscriminator.log_ratio_gradient

    target = torch.full((16,), 2.0)
    towards = Towards(target)
    with torch.inference_mode():  # as the service samples: the gradient is taken all the same
        assert torch.allclose(towards.log_ratio_gradient(x_t, t, weights), target - x_t)
        plain = prior(noise, weights, steps=4, guidance=2.0, eta=1.0)
        assert torch.equal(prior(noise, weights, steps=4, guidance=2.0, eta=1.0, discriminator=towards,
                                 discriminator_guidance=0.0), plain)
        pulled = prior(noise, weights, steps=4, guidance=2.0, eta=1.0, discriminator=towards, discriminator_guidance=0.5)
    standardised = lambda z: (z - prior.z_mean) / prior.z_scale  # noqa: E731 - the space the discriminator sees
    assert (standardised(pulled) - target).norm(dim=1).lt((standardised(plain) - target).norm(dim=1)).all()
    # The latent operations sample with the stored weight and the model's own discriminator.
    model.cfg.diffusion_sampling_steps, model.cfg.diffusion_guidance, model.cfg.diffusion_eta = 4, 2.0, 1.0
    model.cfg.diffusion_discriminator_guidance = 1.0
    with torch.no_grad():
        expected = prior(noise, weights, steps=4, guidance=2.0, eta=1.0, discriminator=discriminator, discriminator_guidance=1.0)
    assert torch.allclose(latent_ops.prior_latents(model, weights, noise), expected)
    for weight in (-0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="diffusion_discriminator_guidance"):
            _diffusion_model(diffusion_discriminator_guidance=weight)


def test_output_scale_pulls_samples_towards_the_latents_mean() -> None:
    from model import latent_ops

    model = _diffusion_model().eval()
    prior = model.latent_prior
    with torch.no_grad():
        prior.conv_out[-1].weight.normal_(0, 0.1)
        prior.z_mean.normal_()
        prior.z_scale.uniform_(0.5, 2.0)
    noise, weights = torch.randn(3, 4 * 16), torch.eye(4)[:3]
    with torch.no_grad():
        plain = prior(noise, weights, steps=4, guidance=2.0, eta=1.0)
        halved = prior(noise, weights, steps=4, guidance=2.0, eta=1.0, output_scale=0.5)
    assert torch.allclose(halved - prior.z_mean, (plain - prior.z_mean) / 2, atol=1e-5)
    model.cfg.diffusion_sampling_steps, model.cfg.diffusion_guidance, model.cfg.diffusion_eta = 4, 2.0, 1.0
    model.cfg.diffusion_output_scale = 0.5
    assert torch.allclose(latent_ops.prior_latents(model, weights, noise), halved)
    for scale in (0.0, -1.0, 2.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="diffusion_output_scale"):
            _diffusion_model(diffusion_output_scale=scale)
