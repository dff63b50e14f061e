from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import checkpoint, latent_ops
from training import identification


@pytest.fixture
def photos() -> tuple[np.ndarray, torch.Tensor]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(10, 128, 128, 3), dtype=np.uint8), torch.arange(10) % 3


def test_reconstructions_are_read_like_photos_at_the_samples_side(
    tiny_checkpoint: Path, photos: tuple[np.ndarray, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = checkpoint.load(tiny_checkpoint, "cpu")
    pixels, labels = photos
    side = model.vae.cfg.image_size
    through_autoencoder = identification.of_reconstructions(model, pixels, labels)
    assert 0.0 <= through_autoencoder <= 1.0
    # With an autoencoder that gave the photo back, the score is the photos' own at the samples' side; the
    # autoencoder is shown the photo as given (as /encode is), not one shrunk first.
    seen: list[tuple[int, ...]] = []

    def lossless(_model: object, images: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(images.shape[-2:]))
        return latent_ops.at_side(images, side)

    monkeypatch.setattr(latent_ops, "reconstruct", lossless)
    assert identification.of_reconstructions(model, pixels, labels) == identification.at_sample_size(
        model, pixels, labels, side
    )
    assert seen == [pixels.shape[1:3]]
