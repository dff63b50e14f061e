"""How well a checkpoint identifies real photos, and how much to trust its numbers (``training.evaluate`` calls it).

Beside the held-out split (the usual table; optimistic for a pretrained trunk, whose ImageNet training photos include
the Kaggle photos and most of ``../shared/dogs``), the ``ILSVRC2012_val_*`` photos of the data (ImageNet's validation
set: the trunk never saw them, and ``training.identifier`` keeps them out of the head's training) are reported on
their own. Calibration is the expected calibration error of the top answer with a reliability diagram; "is it a dog
at all?" is the share of real dog photos flagged (false flags) and of non-dog images flagged, the non-dog images being
the photos and drawings that ship with scikit-image and matplotlib (a cat, people, a motorcycle, a rocket, coffee,
coins, text, textures, logos) and a few drawn here. The VAE's own breed head (trained from scratch) is reported beside
the identifier for continuity.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from model import latent_ops
from model.imaging import load_square
from model.prior import DogModel
from training.data import ImageArray, to_tensor
from training.identifier import IMAGENET_VAL_PREFIX, accuracy, calibration_error

# Real-photo side the identifier is evaluated at: the data's shorter side (the identifier resizes to its own).
PHOTO_SIZE = 128


def probabilities(model: DogModel, pixels: np.ndarray, head: str = "identifier") -> tuple[torch.Tensor, torch.Tensor]:
    """Breed probabilities and dog probabilities of (N, S, S, 3) uint8 photos, in batches."""
    readings = [latent_ops.read_photos(model, to_tensor(pixels[i : i + 64]), head) for i in range(0, len(pixels), 64)]
    return torch.cat([r.breed_probabilities for r in readings]), torch.cat([r.dog_probability for r in readings])


def non_dog_images(size: int = PHOTO_SIZE) -> tuple[list[str], np.ndarray]:
    """Images with no dog in them: scikit-image's and matplotlib's sample photos and drawings (when installed; the
    ``eval`` extra), and drawings made here (shapes, a gradient, noise, a checkerboard)."""
    files: list[Path] = []
    try:
        import skimage.data

        files += sorted(p for p in Path(skimage.data.__file__).parent.iterdir() if p.suffix in (".png", ".jpg"))
    except ImportError:
        pass
    try:
        import matplotlib

        sample = Path(matplotlib.get_data_path()) / "sample_data"
        files += [sample / n for n in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")]
    except ImportError:
        pass
    names = [f.name for f in files if f.is_file()]
    images = [load_square(Image.open(f).convert("RGB"), size) for f in files if f.is_file()]
    rng = np.random.default_rng(0)
    drawn = {
        "noise": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "gradient": np.broadcast_to(np.linspace(0, 255, size, dtype=np.uint8)[None, :, None], (size, size, 3)),
        "checkerboard": (((np.indices((size, size)) // 16).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2),
    }
    shapes = Image.new("RGB", (size, size), (200, 220, 255))
    draw = ImageDraw.Draw(shapes)
    draw.rectangle((20, 60, 100, 100), fill=(200, 30, 30))
    draw.ellipse((30, 90, 55, 115), fill=(20, 20, 20))
    draw.ellipse((70, 90, 95, 115), fill=(20, 20, 20))
    drawn["drawn car"] = np.asarray(shapes)
    names += list(drawn)
    images += [np.ascontiguousarray(a) for a in drawn.values()]
    return names, np.stack(images)


def identification_report(
    model: DogModel, photos: ImageArray, held_out_ids: list[str], breeds: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Metrics for the card, and per reported set the reliability diagram's points (for :func:`plot_reliability`).
    ``photos`` are every photo of the data at :data:`PHOTO_SIZE` px."""
    index = {b: i for i, b in enumerate(breeds)}
    sets = {
        "held_out": photos.select(held_out_ids),
        "imagenet_val": photos.select(sorted(i for i in photos.ids if i.startswith(IMAGENET_VAL_PREFIX))),
    }
    threshold = latent_ops.dog_threshold(model)
    metrics: dict[str, Any] = {"dog_threshold": threshold}
    diagrams = {}
    for name, chosen in sets.items():
        if not chosen.ids:
            continue
        labels = torch.tensor([index[b] for b in chosen.breeds])
        probs, dog = probabilities(model, chosen.pixels)
        top1, top5 = accuracy(probs, labels)
        calibration = calibration_error(probs, labels)
        vae_top1, vae_top5 = accuracy(probabilities(model, chosen.pixels, "vae")[0], labels)
        prefix = "identify" if name == "held_out" else f"identify_{name}"
        if name == "held_out":
            hit = probs.argmax(1) == labels
            metrics["identify_per_breed_top1"] = {
                b: round(float(hit[labels == i].float().mean()), 4) if (labels == i).any() else None
                for i, b in enumerate(breeds)
            }
            confusion = np.zeros((len(breeds), len(breeds)), dtype=np.int64)
            np.add.at(confusion, (labels.numpy(), probs.argmax(1).numpy()), 1)
            metrics["confusion"] = confusion
        metrics |= {
            f"{prefix}_photos": len(labels),
            f"{prefix}_top1": top1,
            f"{prefix}_top5": top5,
            f"{prefix}_ece": calibration["ece"],
            f"{prefix}_vae_head_top1": vae_top1,
            f"{prefix}_vae_head_top5": vae_top5,
            f"{prefix}_flagged_not_a_dog": float((dog < threshold).float().mean()),
        }
        diagrams[name] = calibration
    names, images = non_dog_images()
    _, dog = probabilities(model, images)
    metrics["not_dog_images"] = len(names)
    metrics["not_dog_images_flagged"] = float((dog < threshold).float().mean())
    metrics["not_dog_images_missed"] = sorted(n for n, p in zip(names, dog.tolist(), strict=True) if p >= threshold)
    return metrics, diagrams


def at_sample_size(model: DogModel, pixels: np.ndarray, labels: torch.Tensor, side: int) -> float:
    """Top-1 of real photos shown at the samples' side (``side`` px, then read as any photo): the scale for how often
    the model's own samples are recognised."""
    return _top1_of(model, pixels, labels, lambda x: latent_ops.at_side(x, side))


def of_reconstructions(model: DogModel, pixels: np.ndarray, labels: torch.Tensor) -> float:
    """Top-1 of real photos after the autoencoder (``latent_ops.reconstruct`` of the photo at its own side, as
    ``/encode`` reads it: the decoder's breed condition read from it there, the dog decoded at the samples' side): how
    much of a breed the decoder gives back of a real dog, the scale for the samples' share as ``fid_reconstructions``
    is for their FID."""
    return _top1_of(model, pixels, labels, lambda x: latent_ops.reconstruct(model, x))


@torch.no_grad()
def _top1_of(
    model: DogModel, pixels: np.ndarray, labels: torch.Tensor, shown: Callable[[torch.Tensor], torch.Tensor]
) -> float:
    probs = [
        latent_ops.read_photos(model, shown(to_tensor(pixels[i : i + 64]))).breed_probabilities
        for i in range(0, len(pixels), 64)
    ]
    return accuracy(torch.cat(probs), labels)[0]


def plot_reliability(diagrams: dict[str, dict[str, Any]], path: Path) -> None:
    """Reliability diagram: per confidence bin, how often the top answer was right, against the confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"held_out": "held-out split (optimistic: ImageNet training photos)", "imagenet_val": "ImageNet val"}
    fig, axes = plt.subplots(1, len(diagrams), figsize=(5.2 * len(diagrams), 5), squeeze=False)
    for ax, (name, calibration) in zip(axes[0], diagrams.items(), strict=True):
        points = calibration["reliability"]
        conf = [p["confidence"] for p in points]
        acc = [p["accuracy"] for p in points]
        sizes = [max(8, 400 * p["count"] / sum(q["count"] for q in points)) for p in points]
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
        ax.plot(conf, acc, color="tab:blue", lw=1)
        ax.scatter(conf, acc, s=sizes, color="tab:blue", label="bins (area: photos)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("probability of the top breed")
        ax.set_ylabel("share of photos where it is right")
        ax.set_title(f"{titles.get(name, name)}\nECE {calibration['ece']:.3f}", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
