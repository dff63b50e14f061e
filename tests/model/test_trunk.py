"""model/trunk.py: EfficientNet-Lite0 read from its package's file, checked, and padded like TensorFlow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from model import trunk


def test_the_packaged_weights_load_strictly_and_frozen() -> None:
    network = trunk.load_trunk()
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    photos = torch.rand(2, 3, 96, 96)
    assert network.features(photos).shape == (2, trunk.FEATURES)
    assert network(photos).shape == (2, 1000)


def test_a_changed_or_missing_weights_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "lite0.pth"
    shutil.copy(trunk.weights_path(), copy)
    with open(copy, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(trunk.TrunkWeightsError, match="SHA-256"):
        trunk.load_trunk(copy)
    with pytest.raises(trunk.TrunkWeightsError, match="does not exist"):
        trunk.load_trunk(tmp_path / "missing.pth")


@pytest.mark.parametrize("size", [7, 8, 15, 16])
def test_same_padding_keeps_ceil_of_size_over_stride_and_pads_bottom_right(size: int) -> None:
    conv = trunk.SameConv(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, size, size))
    assert out.shape[-1] == -(-size // 2)
    # TensorFlow's SAME puts an odd padding's extra pixel at the bottom/right: on an even input the first output
    # sums a full 3x3 window (no zero at the top-left), the last one a window cut by the padding.
    if size % 2 == 0:
        assert out[0, 0, 0, 0] == 9 and out[0, 0, -1, -1] == 4


def test_every_breed_of_the_kaggle_set_has_its_imagenet_class() -> None:
    for breed, index in {"golden_retriever": 207, "shih-tzu": 155, "african_hunting_dog": 275, "malamute": 249}.items():
        assert trunk.imagenet_index(breed) == index
        assert index in trunk.DOG_CLASSES
    assert trunk.imagenet_index("tabby") not in trunk.DOG_CLASSES
    assert trunk.imagenet_index("vira_lata") is None
