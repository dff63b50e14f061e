"""training/alignment.py: the trunk's feature maps of real photos and the REPA term of the prior's loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model import trunk
from training.alignment import TRUNK_SIDE, AlignmentTerm, Projector, alignment_loss, photo_feature_maps
from training.data import ImageArray


def test_feature_maps_are_one_vector_per_cell_and_cached(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photos = ImageArray(["a", "b", "c"], ["x", "x", "y"], rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    maps = photo_feature_maps(photos, torch.device("cpu"), tmp_path, progress=False)
    cells = TRUNK_SIDE // 32
    assert maps.shape == (3, trunk.MAP_FEATURES, cells, cells) and maps.dtype == np.float16
    assert len(list((tmp_path / "feature-maps").glob("*.npy"))) == 1
    assert np.array_equal(photo_feature_maps(photos, torch.device("cpu"), tmp_path, progress=False), maps)
    # Other photos under the same ids are another cache entry (the key holds the ids and the photos' side).
    other = ImageArray(photos.ids, photos.breeds, rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))
    assert not np.array_equal(photo_feature_maps(other, torch.device("cpu"), tmp_path, progress=False), maps)


def test_the_alignment_loss_is_zero_when_the_projection_matches_and_training_lowers_it() -> None:
    torch.manual_seed(0)
    projector = Projector(channels=8, features=5)
    hidden = torch.randn(4, 8, 2, 2)
    with torch.no_grad():
        assert alignment_loss(projector, hidden, 3 * projector(hidden)).item() < 1e-6  # cosine: the scale is free
        assert alignment_loss(projector, hidden, -projector(hidden)).item() > 1.99
    targets = torch.randn(4, 5, 4, 4)  # a finer map is pooled to the denoiser's cells
    optimizer = torch.optim.Adam(projector.parameters(), lr=1e-2)
    first = alignment_loss(projector, hidden, targets).item()
    for _ in range(100):
        optimizer.zero_grad()
        alignment_loss(projector, hidden, targets).backward()
        optimizer.step()
    assert alignment_loss(projector, hidden, targets).item() < first / 4
    term = AlignmentTerm(projector, after_block=1, weight=0.5)
    assert torch.allclose(term(hidden, targets), 0.5 * alignment_loss(projector, hidden, targets))
