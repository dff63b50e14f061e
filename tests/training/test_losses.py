from __future__ import annotations

import torch

from model.autoencoder import BreedVAE, VAEConfig
from training.losses import (
    LossWeights,
    PatchDiscriminator,
    adaptive_weight,
    hinge_discriminator_loss,
    stage1_loss,
)

SMALL = dict(
    n_breeds=4, image_size=32, latent_dim=6, breed_embed_dim=8, channels=(8, 16, 16), classifier_channels=(8, 16)
)


def test_stage1_loss_is_finite_and_trains_every_part() -> None:
    vae = BreedVAE(VAEConfig(**SMALL))
    terms = stage1_loss(vae, torch.rand(5, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0]), LossWeights())
    assert torch.isfinite(terms.loss) and terms.kl_per_dim.shape == (6,) and "generated_breed_acc" in terms.extras
    terms.loss.backward()
    for part in (vae.encoder, vae.decoder, vae.breed_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_generated_term_does_not_train_the_breed_head() -> None:
    vae = BreedVAE(VAEConfig(**SMALL))
    weights = LossWeights(breed_weight=0.0, generated_fraction=1.0)
    stage1_loss(vae, torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]), weights).loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in vae.breed_head.parameters())
    assert vae.decoder.from_latent.weight.grad.abs().sum() > 0


def test_evaluation_mode_skips_the_generated_term() -> None:
    vae = BreedVAE(VAEConfig(**SMALL)).eval()
    terms = stage1_loss(vae, torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]), LossWeights())
    assert terms.extras == {}


def test_adaptive_weight_balances_the_two_gradients_at_the_last_layer() -> None:
    layer = torch.nn.Linear(3, 1)
    out = layer(torch.randn(8, 3))
    reconstruction, adversarial = out.pow(2).mean(), -10 * out.mean()
    weight = adaptive_weight(reconstruction, adversarial, layer.weight)
    rec = torch.autograd.grad(reconstruction, layer.weight, retain_graph=True)[0].norm()
    adv = torch.autograd.grad(weight * adversarial, layer.weight)[0].norm()
    assert torch.isclose(rec, adv, rtol=1e-4) and not weight.requires_grad


def test_the_perceptual_term_scores_the_first_images_of_the_batch() -> None:
    class MeanGap(torch.nn.Module):  # a stand-in distance: the mean absolute difference
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a - b).abs().flatten(1).mean(1)

    vae = BreedVAE(VAEConfig(**SMALL)).eval()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    plain = stage1_loss(vae, x, y, LossWeights())
    torch.manual_seed(0)
    weights = LossWeights(perceptual_weight=0.5, perceptual_images=2)
    terms = stage1_loss(vae, x, y, weights, perceptual=MeanGap())
    expected = (terms.reconstruction[:2] - x[:2]).abs().mean()
    assert abs(terms.extras["perceptual"] - float(expected)) < 1e-6
    assert torch.isclose(terms.loss - plain.loss, 0.5 * 3 * 32 * 32 * expected, rtol=1e-4)


def test_the_adversarial_term_trains_the_vae_and_leaves_the_discriminator_alone() -> None:
    vae = BreedVAE(VAEConfig(**SMALL))
    discriminator = PatchDiscriminator(channels=8, layers=2)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    terms = stage1_loss(vae, x, y, LossWeights(adversarial_weight=0.5), discriminator=discriminator)
    terms.loss.backward()
    assert terms.extras["adaptive_weight"] > 0 and "generator" in terms.extras
    assert all(p.grad is None for p in discriminator.parameters())
    assert vae.decoder.head[-1].weight.grad.abs().sum() > 0
    logits = discriminator(x)
    assert logits.dim() == 4 and logits.shape[1] == 1 and logits.shape[-1] > 1  # one logit per patch
    loss = hinge_discriminator_loss(discriminator(x), discriminator(terms.reconstruction))
    loss.backward()
    assert all(p.grad is not None for p in discriminator.parameters())
