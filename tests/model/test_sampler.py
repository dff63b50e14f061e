from __future__ import annotations

import dataclasses

import pytest
import torch

from model import latent_ops, sampler
from model.autoencoder import BreedVAE, VAEConfig
from model.diffusion import DiffusionConfig, LatentDiffusion
from model.prior import DiffusionPrior, DogModel, Student
from model.sampler import SamplerSettings, classifier_free

S = SamplerSettings(steps=4, guidance=2.0)


def random_denoiser(channels: int = 32, blocks: int = 2) -> LatentDiffusion:
    """An untrained denoiser whose output layer is not zero, so guidance has an effect."""
    denoiser = LatentDiffusion(DiffusionConfig(channels=channels, blocks=blocks), 4, (1, 4, 4)).eval()
    with torch.no_grad():
        denoiser.conv_out[-1].weight.normal_(0, 0.1)
    return denoiser


def run(
    denoiser: LatentDiffusion, noise: torch.Tensor, guide: LatentDiffusion | None = None, **settings: float
) -> torch.Tensor:
    with torch.no_grad():
        return sampler.sample(denoiser, noise, torch.eye(4)[: len(noise)], dataclasses.replace(S, **settings), guide)


def test_sampling_is_deterministic_and_guidance_changes_it() -> None:
    denoiser, noise = random_denoiser(), torch.randn(3, 16)
    a = run(denoiser, noise)
    assert a.shape == (3, 16) and torch.equal(a, run(denoiser, noise))
    assert not torch.allclose(a, run(denoiser, noise, guidance=1.0))


def test_guidance_rescale_restores_the_conditional_spread_and_keeps_the_direction() -> None:
    """Lin et al. (2024): rescale 1 gives each guided row the conditional row's standard deviation, in the guided
    direction; 0 is plain guidance; values between blend the two; without guidance it changes nothing."""
    v_cond, v_uncond = torch.randn(5, 16), torch.randn(5, 16)
    plain = v_uncond + 3.0 * (v_cond - v_uncond)
    assert torch.equal(classifier_free(v_cond, v_uncond, 3.0), plain)
    full = classifier_free(v_cond, v_uncond, 3.0, rescale=1.0)
    assert torch.allclose(full.std(1), v_cond.std(1), atol=1e-5)
    ratio = full / plain  # one positive factor per row: the same direction, another length
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4) and bool((ratio > 0).all())
    assert torch.allclose(classifier_free(v_cond, v_uncond, 3.0, rescale=0.5), (plain + full) / 2, atol=1e-5)
    assert torch.allclose(classifier_free(v_cond, v_uncond, 1.0, rescale=1.0), v_cond, atol=1e-5)
    denoiser, noise = random_denoiser(), torch.randn(3, 16)
    rescaled = run(denoiser, noise, guidance=3.0, guidance_rescale=0.5)
    assert torch.isfinite(rescaled).all() and not torch.allclose(rescaled, run(denoiser, noise, guidance=3.0))


def test_stochastic_ddim_takes_its_fresh_noise_from_the_starting_noise() -> None:
    """eta > 0 adds fresh noise at every step but the last, taken from the given noise: a seed fixes the sample."""
    denoiser = random_denoiser()
    assert sampler.noise_dim(denoiser, S) == 16 and sampler.noise_dim(denoiser, dataclasses.replace(S, eta=1.0)) == 64
    noise = torch.randn(3, 4 * 16)
    a = run(denoiser, noise, eta=1.0)
    assert a.shape == (3, 16) and torch.equal(a, run(denoiser, noise, eta=1.0))
    other_fresh = torch.cat([noise[:, :16], torch.randn(3, 3 * 16)], dim=1)
    assert not torch.allclose(a, run(denoiser, other_fresh, eta=1.0))
    assert not torch.allclose(a, run(denoiser, noise, eta=0.5))
    with pytest.raises(ValueError, match="64 noise numbers"):
        run(denoiser, noise[:, :16], eta=1.0)


def test_autoguidance_pushes_away_from_the_guide_and_weight_one_ignores_it() -> None:
    """v = v_guide + w (v - v_guide): weight 1 ignores the guide, a guide equal to the denoiser changes nothing,
    another guide with w > 1 moves the samples."""
    denoiser, guide = random_denoiser(), random_denoiser(channels=8, blocks=1)
    noise = torch.randn(3, 4 * 16)
    plain = run(denoiser, noise, eta=1.0)
    assert torch.equal(run(denoiser, noise, guide, eta=1.0, autoguidance=1.0), plain)
    pushed = run(denoiser, noise, guide, eta=1.0, autoguidance=2.0)
    assert pushed.shape == plain.shape and not torch.allclose(pushed, plain)
    assert torch.allclose(run(denoiser, noise, denoiser, eta=1.0, autoguidance=3.0), plain, atol=1e-5)
    with pytest.raises(ValueError, match="needs a guide"):
        run(denoiser, noise, eta=1.0, autoguidance=2.0)


def test_output_scale_pulls_samples_towards_the_latents_mean() -> None:
    denoiser = random_denoiser()
    with torch.no_grad():
        denoiser.z_mean.normal_()
        denoiser.z_scale.uniform_(0.5, 2.0)
    noise = torch.randn(3, 16)
    plain, halved = run(denoiser, noise), run(denoiser, noise, output_scale=0.5)
    assert torch.allclose(halved - denoiser.z_mean, (plain - denoiser.z_mean) / 2, atol=1e-5)


def test_latent_operations_sample_with_the_checkpoints_settings_unless_given_others() -> None:
    vae = BreedVAE(VAEConfig(n_breeds=4, image_size=16, latent_dim=16, latent_channels=1, channels=(8, 8)))
    denoiser, guide = random_denoiser(), random_denoiser(channels=8, blocks=1)
    stored = SamplerSettings(steps=4, guidance=3.0, guidance_rescale=0.5, eta=1.0, output_scale=0.9, autoguidance=2.0)
    model = DogModel(vae, DiffusionPrior(denoiser, guide), stored)
    weights, noise = torch.eye(4)[:3], torch.randn(3, 64)
    expected = run(
        denoiser, noise, guide, guidance=3.0, guidance_rescale=0.5, eta=1.0, output_scale=0.9, autoguidance=2.0
    )
    assert torch.allclose(latent_ops.prior_latents(model, weights, noise), expected)
    other = SamplerSettings(steps=2, guidance=1.0)
    assert latent_ops.noise_dim(model, other) == 16
    with torch.no_grad():
        assert torch.allclose(
            latent_ops.prior_latents(model, weights, noise[:, :16], sampling=other),
            sampler.sample(denoiser, noise[:, :16], weights, other),
        )
    assert model.sampling == stored  # never changed by a call


class CountingDenoiser(LatentDiffusion):
    """A denoiser that counts the rows it predicts for."""

    rows = 0

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, breed_weights: torch.Tensor) -> torch.Tensor:
        self.rows += len(x_t)
        return super().velocity(x_t, t, breed_weights)


def test_distilled_sampling_runs_the_student_alone_at_its_own_steps() -> None:
    vae = BreedVAE(VAEConfig(n_breeds=4, image_size=16, latent_dim=16, latent_channels=1, channels=(8, 8)))
    config = DiffusionConfig(channels=16, blocks=1)
    teacher, student = (CountingDenoiser(config, 4, (1, 4, 4)).eval() for _ in range(2))
    teaching = SamplerSettings(steps=8, guidance=3.0)
    prior = DiffusionPrior(teacher, None, Student(student, 4, teaching))
    model = DogModel(vae, prior, SamplerSettings(guidance=3.0, distilled=True))
    weights, noise = torch.eye(4)[:3], torch.randn(3, 16)
    z = latent_ops.prior_latents(model, weights, noise)
    assert (teacher.rows, student.rows) == (0, 3 * 4)  # one unguided pass per step and dog; the teacher idle
    with torch.no_grad():
        assert torch.allclose(z, sampler.sample(student, noise, weights, SamplerSettings(steps=4, guidance=1.0)))
    halved = latent_ops.prior_latents(model, weights, noise, sampling=SamplerSettings(output_scale=0.5, distilled=True))
    assert torch.allclose(halved - student.z_mean, (z - student.z_mean) / 2, atol=1e-5)
    latent_ops.prior_latents(model, weights, noise, sampling=SamplerSettings(steps=2, guidance=3.0))
    assert teacher.rows == 3 * 2 * 2  # distilled=false: the teacher, guided (two rows per dog and step)
    assert model.prior.modules()["student_prior"] is student
    without = DogModel(vae, DiffusionPrior(teacher), SamplerSettings(distilled=True))
    with pytest.raises(ValueError, match="needs a distilled student"):
        latent_ops.noise_dim(without)
    assert SamplerSettings(distilled=1.0).distilled is True  # as a settings grid passes it


def test_mix_strength_scales_mixes_and_leaves_pure_breeds_and_the_unconditional_row() -> None:
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.7, 0.3, 0.0], [0.0, 0.0, 0.0]])
    assert torch.equal(sampler.mix_condition(weights, 0.0), weights)
    once = sampler.mix_condition(weights, 1.0)
    assert torch.allclose(once[:3].norm(dim=1), torch.ones(3))  # at 1 every mix is a unit vector
    assert torch.equal(once[0], weights[0]) and torch.equal(once[3], weights[3])
    twice = sampler.mix_condition(weights, 2.0)
    assert torch.allclose(twice[1], torch.tensor([1.0, 1.0, 0.0]))  # an even mix: each parent at full weight
    assert torch.allclose(twice[2, 0] / twice[2, 1], torch.tensor(0.7 / 0.3))  # the ratio is kept
    # In the sampler: a pure breed samples as before, a mix does not.
    denoiser, noise = random_denoiser(), torch.randn(2, 16)
    mixes = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    with torch.no_grad():
        plain = sampler.sample(denoiser, noise, mixes, S)
        strong = sampler.sample(denoiser, noise, mixes, dataclasses.replace(S, mix_strength=2.0))
    assert torch.allclose(plain[0], strong[0]) and not torch.allclose(plain[1], strong[1])


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("steps", [0, 1001, 2.5]),
        ("guidance", [-1.0, float("inf"), float("nan")]),
        ("guidance_rescale", [-0.1, 1.5, float("nan")]),
        ("eta", [1.5, -0.5, float("nan")]),
        ("output_scale", [0.0, -1.0, 2.5, float("nan"), float("inf")]),
        ("autoguidance", [0.5, float("inf"), float("nan")]),
        ("mix_strength", [-0.5, 4.5, float("nan")]),
        ("distilled", [0.5, 2, -1]),
    ],
)
def test_bad_settings_are_refused(name: str, values: list[float]) -> None:
    for value in values:
        with pytest.raises(ValueError, match=f"sampler setting {name} must be"):
            SamplerSettings(**{name: value})


def test_settings_are_frozen_and_round_trip() -> None:
    settings = SamplerSettings(steps=8, guidance=5.0, eta=1.0)
    assert SamplerSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.steps = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown sampler settings"):
        SamplerSettings.from_dict({"guidance_max_t": 1.0})
