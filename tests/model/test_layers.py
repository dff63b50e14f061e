from __future__ import annotations

import pytest
import torch

from model.layers import SelfAttention


def test_attention_starts_as_the_identity() -> None:
    """Its output projection starts at zero, so adding attention leaves an untrained denoiser unchanged."""
    layer = SelfAttention(16)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(layer(x), x)
    with torch.no_grad():
        layer.proj.weight.normal_()
    assert layer(x).shape == x.shape and not torch.equal(layer(x), x)
    with pytest.raises(ValueError, match="heads"):
        SelfAttention(18)
