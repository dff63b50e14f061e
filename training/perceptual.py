"""A perceptual distance for training the first stage: shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022).

LPIPS (Zhang et al. 2018) compares two images through the channel-normalised activations of a convolutional trunk,
weighted per channel by linear heads fitted to human judgements of image patches. The shift-tolerant variant used
here has an AlexNet-shaped trunk with blurred (anti-aliased) downsampling, and its trunk *and* heads were trained from
scratch on those judgements of 64x64 patches, so it knows no ImageNet class. Its calibrated weights ship in the PyPI
package ``stlpips-pytorch`` (the ``train`` extra); only that ``.pth`` file is read, into the network defined below
(strict key match, SHA-256 checked), and none of the package's code runs. Training-only: nothing served uses it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKAGE = "stlpips-pytorch==0.0.2"
ALEX_WEIGHTS = "weights/vST0.0/alex_shift_tolerant.pth"
ALEX_SHA256 = "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee"


class PerceptualWeightsError(RuntimeError):
    """The perceptual network's weights are missing or not the expected file."""


class BlurDownsample(nn.Module):
    """Reflect-pad by 2, blur with the 3x3 binomial filter, keep every second pixel (anti-aliased stride 2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        row = torch.tensor([1.0, 2.0, 1.0])
        kernel = row[:, None] * row[None, :]
        self.register_buffer("filt", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class ShiftTolerantAlexNet(nn.Module):
    """The trunk: AlexNet's five convolutions, each stride replaced by a blur before subsampling. Returns the five
    activations the distance compares. Module indices follow the weights file's keys."""

    CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self) -> None:
        super().__init__()
        relu = nn.ReLU
        self.slice1 = nn.Sequential()
        self.slice1.add_module("0", nn.Conv2d(3, 64, 11, padding=2))
        self.slice1.add_module("1", BlurDownsample(64))
        self.slice1.add_module("2", relu())
        self.slice2 = _numbered(
            3, nn.MaxPool2d(3, stride=1), BlurDownsample(64), nn.Conv2d(64, 192, 5, padding=2), relu()
        )
        self.slice3 = _numbered(
            7, nn.MaxPool2d(3, stride=1), BlurDownsample(192), nn.Conv2d(192, 384, 3, padding=1), relu()
        )
        self.slice4 = _numbered(11, nn.Conv2d(384, 256, 3, padding=1), relu())
        self.slice5 = _numbered(13, nn.Conv2d(256, 256, 3, padding=1), relu())

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = stage(x)
            features.append(x)
        return features


def _numbered(first: int, *layers: nn.Module) -> nn.Sequential:
    sequence = nn.Sequential()
    for i, layer in enumerate(layers, first):
        sequence.add_module(str(i), layer)
    return sequence


class _LinearHead(nn.Module):
    """One layer's per-channel weights (a 1x1 convolution to one channel); index 0 was a dropout in training."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential()
        self.model.add_module("1", nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class ShiftTolerantLPIPS(nn.Module):
    """d(x, y) for images in [0, 1]: (n,) distances, 0 for identical images. Frozen, in eval mode; gradients flow
    to the inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.scaling_layer.register_buffer("scale", torch.ones(1, 3, 1, 1))
        self.net = ShiftTolerantAlexNet()
        for i, channels in enumerate(ShiftTolerantAlexNet.CHANNELS):
            self.add_module(f"lin{i}", _LinearHead(channels))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale = self.scaling_layer.shift, self.scaling_layer.scale
        fx = self.net(((x * 2 - 1) - shift) / scale)
        fy = self.net(((y * 2 - 1) - shift) / scale)
        distance = torch.zeros(len(x), device=x.device, dtype=x.dtype)
        for i, (a, b) in enumerate(zip(fx, fy, strict=True)):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            distance = distance + getattr(self, f"lin{i}")((a - b).pow(2)).mean((1, 2, 3))
        return distance


def weights_path() -> Path:
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise PerceptualWeightsError(f"the perceptual loss needs the package {PACKAGE}: pip install -e '.[train]'")
    return Path(next(iter(spec.submodule_search_locations))) / ALEX_WEIGHTS


def load_lpips(path: Path | None = None) -> ShiftTolerantLPIPS:
    """The calibrated network, weights checked against their SHA-256, frozen and in eval mode."""
    path = path or weights_path()
    if not path.is_file():
        raise PerceptualWeightsError(f"{path} does not exist; reinstall {PACKAGE}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != ALEX_SHA256:
        raise PerceptualWeightsError(f"{path} has SHA-256 {digest}, expected {ALEX_SHA256} ({PACKAGE})")
    network = ShiftTolerantLPIPS()
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return network.requires_grad_(False).eval()
