"""Representation alignment of the latent prior (REPA: Yu et al., "Representation Alignment for Generation: Training
Diffusion Transformers Is Easier Than You Think", ICLR 2025).

Why: the prior's samples have a breed's colours and coat but rarely a dog's head, legs or body; a denoiser trained
on the denoising error alone learns what a dog is slowly. REPA adds one term: a small MLP reads the denoiser's
features after its first few blocks, at every cell of the noisy latent, and is trained to predict what a pretrained
image network sees at that place of the *clean real photo* (cosine similarity). The denoiser's early features are so
pulled towards a representation that already knows heads from legs; the paper trains SiT models 17.5x faster.

Here the pretrained network is the identification trunk (``model/trunk.py``, EfficientNet-Lite0): its last block's
320-channel map of each training photo, read at 256 px from the 128-px photo (the same square crop the 64-px photo
the latent encodes was cut from), is 8x8, one vector per 2x2 cell of the 16x16x4 latent the denoiser sees at patch 2.
The trunk only describes real photos here; no generated latent or image is ever shown to it (the project's rule).
Nothing of this is stored in the checkpoint: the MLP is dropped after training, and sampling is unchanged.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from model import trunk
from training.data import ImageArray, default_cache_dir, to_tensor

TRUNK_SIDE = 256  # the side the trunk reads the photos at: an 8x8 map (its stride is 32)
TRUNK_BATCH = 8


@torch.inference_mode()
def photo_feature_maps(
    photos: ImageArray, device: torch.device, cache_dir: Path | None = None, progress: bool = True
) -> np.ndarray:
    """(N, 320, 8, 8) float16: the trunk's feature map of every photo (any side; read at ``TRUNK_SIDE`` px), cached
    under the photo ids."""
    spec = f"{trunk.WEIGHTS_SHA256}|map|{TRUNK_SIDE}|{photos.pixels.shape[1]}|" + "\n".join(photos.ids)
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    path = (cache_dir or default_cache_dir()) / "feature-maps" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    backbone = trunk.load_trunk().to(device)
    cells = TRUNK_SIDE // 32
    out = np.empty((len(photos.ids), trunk.MAP_FEATURES, cells, cells), np.float16)
    for i in tqdm(range(0, len(photos.ids), TRUNK_BATCH), desc="trunk feature maps", disable=not progress):
        x = to_tensor(photos.pixels[i : i + TRUNK_BATCH]).to(device)
        x = F.interpolate(x, size=TRUNK_SIDE, mode="bilinear", antialias=True, align_corners=False)
        out[i : i + TRUNK_BATCH] = backbone.feature_map(x).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return out


class Projector(nn.Module):
    """REPA's projection head, per cell: the denoiser's ``channels`` features -> the trunk's ``features``."""

    def __init__(self, channels: int, features: int = trunk.MAP_FEATURES) -> None:
        super().__init__()
        hidden = 2 * channels
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, hidden, 1), nn.SiLU(),
            nn.Conv2d(hidden, features, 1),
        )  # fmt: skip

    def forward(self, hidden: Tensor) -> Tensor:
        return self.net(hidden)


def alignment_loss(projector: Projector, hidden: Tensor, targets: Tensor) -> Tensor:
    """1 - the mean cosine similarity, cell by cell, of the projected denoiser features (n, c, h, w) and the
    trunk's map (n, 320, h', w'), resized to the denoiser's cells where the two differ."""
    predicted = projector(hidden)
    if targets.shape[-2:] != predicted.shape[-2:]:
        targets = F.adaptive_avg_pool2d(targets, predicted.shape[-2:])
    return 1 - F.cosine_similarity(predicted.float(), targets.float(), dim=1).mean()


@dataclass
class AlignmentTerm:
    """The REPA term of the prior's loss: ``weight`` x :func:`alignment_loss` of the features after ``after_block``
    blocks."""

    projector: Projector
    after_block: int
    weight: float

    def __call__(self, hidden: Tensor, targets: Tensor) -> Tensor:
        return self.weight * alignment_loss(self.projector, hidden, targets)
