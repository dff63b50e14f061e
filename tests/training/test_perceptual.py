from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.perceptual import PerceptualWeightsError, load_lpips, weights_path


@pytest.fixture(scope="module")
def lpips() -> torch.nn.Module:
    return load_lpips()


def test_the_distance_is_zero_for_the_same_image_and_grows_with_the_damage(lpips: torch.nn.Module) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(lpips(x, x), torch.zeros(3))
        slight = lpips(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1))
        strong = lpips(x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1))
    assert (slight > 0).all() and (strong > slight).all()


def test_it_is_frozen_and_passes_gradients_to_the_images(lpips: torch.nn.Module) -> None:
    assert not any(p.requires_grad for p in lpips.parameters()) and not lpips.training
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64, requires_grad=True)
    lpips(x, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_other_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PerceptualWeightsError, match="does not exist"):
        load_lpips(tmp_path / "none.pth")
    changed = tmp_path / "alex.pth"
    changed.write_bytes(weights_path().read_bytes()[:-1] + b"\0")
    with pytest.raises(PerceptualWeightsError, match="SHA-256"):
        load_lpips(changed)
