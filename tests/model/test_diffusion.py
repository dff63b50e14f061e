from __future__ import annotations

import pytest
import torch

from model import latent_ops
from model.autoencoder import BreedVAE, VAEConfig
from model.diffusion import DiffusionConfig, LatentDiffusion
from model.prior import DiffusionPrior, DogModel
from model.sampler import SamplerSettings
from training.losses import denoising_loss


@pytest.mark.parametrize("attention, patch", [(False, 1), (True, 1), (True, 2)])
def test_diffusion_prior_learns_each_breeds_latents(attention: bool, patch: int) -> None:
    """A diffusion prior trained on two breeds' well-separated latents samples each breed near its own data,
    and its denoising error (the likelihood behind ancestry) names the breed a new latent came from; also when the
    denoiser sees 2x2 patches of the latent."""
    denoiser = LatentDiffusion(DiffusionConfig(channels=32, blocks=2, attention=attention, patch=patch), 2, (1, 4, 4))
    assert len(denoiser.attention) == (1 if attention else 0)
    assert denoiser.conv_in.in_channels == patch**2
    torch.manual_seed(0)
    centres = torch.randn(2, 16) * 3
    breeds = torch.randint(0, 2, (1000,))
    z = centres[breeds] + 0.3 * torch.randn(1000, 16)
    weights = torch.nn.functional.one_hot(breeds, 2).float()
    denoiser.fit_standardisation(z)
    opt = torch.optim.Adam(denoiser.parameters(), lr=2e-3)
    for _ in range(400):
        idx = torch.randint(0, 1000, (128,))
        loss, _ = denoising_loss(denoiser, z[idx], weights[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    denoiser.eval()
    prior = DiffusionPrior(denoiser)
    with torch.no_grad():
        for breed in (0, 1):
            for eta in (0.0, 1.0):  # deterministic DDIM, and DDIM with DDPM's fresh noise at every step
                settings = SamplerSettings(steps=16, guidance=1.0, eta=eta)
                samples = prior.sample(
                    torch.randn(200, prior.noise_dim(settings)), torch.eye(2)[[breed] * 200], settings
                )
                to_own = (samples - centres[breed]).norm(dim=1).median()
                to_other = (samples - centres[1 - breed]).norm(dim=1).median()
                assert to_own < 0.3 * to_other
        # SDEdit: a latent of breed 0 redrawn as breed 1 stays where it was at a small strength, and lands among
        # breed 1's latents at a large one (transfer changes the breed only as far as it is asked to).
        z = centres[0] + 0.3 * torch.randn(50, 16)
        settings = SamplerSettings(steps=16, guidance=1.0)
        to_breed_1 = torch.eye(2)[[1] * 50]
        assert torch.equal(prior.edit(z, to_breed_1, settings, 0.0, torch.randn(50, 16)), z)
        for strength, lands_at in ((0.1, 0), (0.9, 1)):
            edited = prior.edit(z, to_breed_1, settings, strength, torch.randn(50, 16))
            distance = [(edited - centres[b]).norm(dim=1).median() for b in (0, 1)]
            assert distance[lands_at] < 0.3 * distance[1 - lands_at], (strength, distance)
    vae = BreedVAE(VAEConfig(n_breeds=2, image_size=16, latent_dim=16, latent_channels=1, channels=(8, 8)))
    model = DogModel(vae, prior)
    for breed in (0, 1):
        new_latent = centres[breed] + 0.3 * torch.randn(16)
        with torch.no_grad():
            errors = denoiser.denoising_error(new_latent, torch.eye(2))
        assert int(errors.argmin()) == breed
        found = latent_ops.ancestry_weights(model, new_latent, max_breeds=2)
        assert int(found.argmax()) == breed and abs(float(found.sum()) - 1) < 1e-5


def test_config_round_trip() -> None:
    cfg = DiffusionConfig(channels=16, blocks=1, attention=True)
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown DiffusionConfig fields"):
        DiffusionConfig.from_dict({"channels": 8, "guidance": 2})
    # Cards written while a photo-conditioned prior was an option store photo_dim 0: they still load.
    assert DiffusionConfig.from_dict({**cfg.to_dict(), "photo_dim": 0}) == cfg
    with pytest.raises(ValueError, match="photo embeddings"):
        DiffusionConfig.from_dict({**cfg.to_dict(), "photo_dim": 64})


def test_patches_must_tile_the_latent() -> None:
    with pytest.raises(ValueError, match="patch must be at least 1"):
        DiffusionConfig(patch=0)
    with pytest.raises(ValueError, match="does not split into 3x3 patches"):
        LatentDiffusion(DiffusionConfig(channels=8, blocks=1, patch=3), 2, (1, 4, 4))
    cfg = DiffusionConfig(channels=8, blocks=1, patch=2)
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg
    assert DiffusionConfig.from_dict({"channels": 8, "blocks": 1, "attention": False}).patch == 1  # older cards
