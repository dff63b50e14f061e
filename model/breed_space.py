"""Where the breed identifier's trunk places real photos of each breed: a Gaussian per breed over a few whitened
numbers of the pretrained trunk's embedding, the space ancestry weighs breed mixes in.

The embedding is the trunk's (``model/trunk.py``) pooled features of a real photo, reduced by PCA to ``dim``
whitened numbers fitted on the training photos; each breed gets the mean and a shrunk covariance of its photos'
numbers, and a mix of breeds the means and covariances interpolated by weight. Fitted by ``training.identifier``
(``--embedding-dim``); ancestry asks which mix's Gaussian best explains an uploaded photo's embedding
(``model.latent_ops.breed_space_weights``). Only real photos are ever embedded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Per-breed covariances are shrunk towards the pooled within-breed one by this many pseudo-photos: the smallest
# breeds have ~130 embeddings (photos and their mirror images) for a 64 x 64 covariance.
SHRINKAGE_PHOTOS = 64
RIDGE = 1e-4  # against unit variance per whitened number: nothing on real data


class BreedSpace(nn.Module):
    """Whitening of trunk embeddings and a Gaussian per breed over the whitened numbers (all buffers, fitted by
    :meth:`fit`)."""

    def __init__(self, dim: int, n_breeds: int, features: int = 1280) -> None:
        super().__init__()
        self.dim, self.features = dim, features
        self.register_buffer("center", torch.zeros(features))
        self.register_buffer("projection", torch.zeros(dim, features))
        self.register_buffer("breed_mean", torch.zeros(n_breeds, dim))
        self.register_buffer("breed_covariance", torch.eye(dim).repeat(n_breeds, 1, 1))

    def whiten(self, features: Tensor) -> Tensor:
        """(n, features) trunk embeddings -> (n, dim) numbers of unit variance over the training photos."""
        return (features.to(self.center) - self.center) @ self.projection.T

    @torch.no_grad()
    def fit(self, features: Tensor, breeds: Tensor) -> None:
        """PCA-whitening on ``features`` (n, features), then every breed's mean and shrunk covariance."""
        features = features.double()
        center = features.mean(0)
        values, vectors = torch.linalg.eigh(torch.cov((features - center).T))
        top = values.argsort(descending=True)[: self.dim]
        self.center.copy_(center)
        # Directions with next to no spread (fewer photos than features) are not blown up by the whitening.
        self.projection.copy_((vectors[:, top] / values[top].clamp_min(float(values.max()) * 1e-6).sqrt()).T)
        x = self.whiten(features.float()).double()
        n_breeds = len(self.breed_mean)
        counts = torch.bincount(breeds, minlength=n_breeds).double()
        means = torch.zeros(n_breeds, self.dim, dtype=torch.float64).index_add_(0, breeds, x) / counts[:, None]
        centred = x - means[breeds]
        scatter = torch.zeros(n_breeds, self.dim, self.dim, dtype=torch.float64)
        scatter.index_add_(0, breeds, centred[:, :, None] * centred[:, None, :])
        pooled = scatter.sum(0) / (len(x) - n_breeds)
        covariance = (scatter + SHRINKAGE_PHOTOS * pooled) / (counts + SHRINKAGE_PHOTOS)[:, None, None]
        covariance += RIDGE * torch.eye(self.dim, dtype=torch.float64)  # positive definite on few photos too
        self.breed_mean.copy_(means)
        self.breed_covariance.copy_(covariance)

    def mix(self, weights: Tensor) -> tuple[Tensor, Tensor]:
        """(n, n_breeds) weights -> the mix's (n, dim) means and (n, dim, dim) covariances (interpolated by weight)."""
        w = _normalised(weights)
        return w @ self.breed_mean, torch.einsum("nb,bij->nij", w, self.breed_covariance)

    def log_density(self, x: Tensor, weights: Tensor) -> Tensor:
        """Log density of whitened embeddings x (dim,) or (n, dim) under each row of (n, n_breeds) weights' mix."""
        mean, covariance = self.mix(weights)
        return torch.distributions.MultivariateNormal(mean, covariance).log_prob(x.expand_as(mean))

    def distance(self, x: Tensor, weights: Tensor) -> Tensor:
        """Squared Mahalanobis distances of x (dim,) or (n, dim) from each row of (n, n_breeds) weights' mix."""
        mean, covariance = self.mix(weights)
        whitened = torch.linalg.solve_triangular(
            torch.linalg.cholesky(covariance), (x.expand_as(mean) - mean)[:, :, None], upper=False
        )
        return whitened.squeeze(-1).pow(2).sum(-1)


def _normalised(weights: Tensor) -> Tensor:
    return weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
