"""model/identifier.py: calibrated breed probabilities and the dog probability, stored as a head beside the VAE."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from model import checkpoint, latent_ops, trunk
from model.identifier import BreedIdentifier, IdentifierConfig


def identifier(**settings: object) -> BreedIdentifier:
    torch.manual_seed(0)
    network = BreedIdentifier(IdentifierConfig(n_breeds=4, image_size=64, **settings), trunk.EfficientNetLite0())
    torch.nn.init.normal_(network.head.weight, std=0.5)
    return network.eval()


def test_a_reading_is_a_distribution_and_a_dog_probability() -> None:
    reading = identifier().read(torch.rand(3, 3, 50, 70))
    assert reading.breed_probabilities.shape == (3, 4)
    assert torch.allclose(reading.breed_probabilities.sum(1), torch.ones(3), atol=1e-5)
    assert ((reading.dog_probability >= 0) & (reading.dog_probability <= 1)).all()


def test_the_mirror_image_is_averaged_in_and_the_temperature_flattens() -> None:
    photos = torch.rand(2, 3, 64, 64)
    once = identifier(test_flip=False)
    both = identifier(test_flip=True)
    mirrored = once.read(photos.flip(3)).breed_probabilities
    expected = (once.read(photos).breed_probabilities + mirrored) / 2
    assert torch.allclose(both.read(photos).breed_probabilities, expected, atol=1e-5)
    hot = identifier(test_flip=False, temperature=4.0).read(photos).breed_probabilities
    assert (hot.max(1).values < once.read(photos).breed_probabilities.max(1).values).all()


def test_only_the_head_is_stored_and_the_trunk_comes_back_from_its_package(
    tiny_diffusion_checkpoint: Path, tmp_path: Path
) -> None:
    model, card = checkpoint.load(tiny_diffusion_checkpoint)
    model.identifier = identifier(dog_threshold=0.3)
    model.identifier.head = torch.nn.Linear(trunk.FEATURES, model.n_breeds)
    model.identifier.cfg = replace(model.identifier.cfg, n_breeds=model.n_breeds)
    checkpoint.save(model, {k: v for k, v in card.items() if k != "weights_sha256"}, tmp_path)
    stored = load_file(str(tmp_path / checkpoint.WEIGHTS_FILE))
    assert {k for k in stored if k.startswith("identifier_head.")} == {"identifier_head.weight", "identifier_head.bias"}
    assert not any("_conv_stem" in k or "_blocks." in k for k in stored)  # the trunk's weights stay in its package
    again, again_card = checkpoint.load(tmp_path)
    assert again_card["identifier"]["dog_threshold"] == 0.3 and again.photo_size == max(64, model.vae.cfg.photo_size)
    assert torch.equal(again.identifier.head.weight, model.identifier.head.weight)
    packaged = trunk.load_trunk().state_dict()
    assert all(torch.equal(v, packaged[k]) for k, v in again.identifier.trunk.state_dict().items())
    photo = torch.rand(1, 3, 64, 64)
    assert torch.allclose(
        latent_ops.breed_probabilities(again, photo), again.identifier.read(photo).breed_probabilities
    )
    assert not torch.allclose(
        latent_ops.breed_probabilities(again, photo, head="vae"), again.identifier.read(photo).breed_probabilities
    )
