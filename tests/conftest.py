"""Shared fixtures: small synthetic dog data sets (no ../shared needed) and a tiny trained checkpoint."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

# Three synthetic "breeds", each a coloured blob of its own shape on a varied background.
BREED_COLOURS = {"beagle": (170, 110, 40), "samoyed": (235, 235, 230), "gordon_setter": (25, 20, 15)}
STANFORD_SYNSETS = {
    "beagle": "n02088364-Beagle",
    "samoyed": "n02111889-Samoyed",
    "gordon_setter": "n02101006-Gordon_setter",
}
# Small architecture so a training epoch takes a second or two on a laptop core; a spatial latent of
# 2 channels at 4x4 (32 numbers) like the default checkpoint's 8 channels at 8x8. Two photos per breed held out
# (of 16), not the real split's ten.
TINY_RUN = [
    "--channels", "8,16,16,32", "--classifier-channels", "8,16,16,32", "--latent-channels", "2",
    "--min-validation", "2",
]  # fmt: skip


def synthetic_dog(breed: str, rng: random.Random, size: tuple[int, int] = (72, 64)) -> Image.Image:
    w, h = size
    bg = tuple(rng.randint(60, 160) for _ in range(3))
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    for _ in range(3):  # background clutter, so no two photos look alike to the duplicate finder
        x, y = rng.randint(0, w), rng.randint(0, h)
        shade = tuple(max(0, min(255, c + rng.randint(-50, 50))) for c in bg)
        draw.ellipse((x - 15, y - 12, x + 15, y + 12), fill=shade)
    colour = BREED_COLOURS[breed]
    cx, cy = rng.randint(w // 3, 2 * w // 3), rng.randint(h // 3, 2 * h // 3)
    rx, ry = (22, 12) if breed == "beagle" else (16, 16) if breed == "samoyed" else (10, 20)
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
    draw.ellipse((cx + rx - 6, cy - ry - 6, cx + rx + 6, cy - ry + 6), fill=colour)  # a "head"
    return img


def write_folders(root: Path, per_breed: int = 12, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for breed in BREED_COLOURS:
        folder = root / "images" / breed
        folder.mkdir(parents=True)
        for i in range(per_breed):
            synthetic_dog(breed, rng, (rng.choice([64, 84, 96]), 64)).save(folder / f"{breed}_{i:03d}.jpg", quality=92)
    return root


def write_kaggle(root: Path, per_breed: int = 6, seed: int = 1) -> Path:
    rng = random.Random(seed)
    (root / "train").mkdir(parents=True)
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "breed"])
        for breed in BREED_COLOURS:
            for _ in range(per_breed):
                image_id = f"{rng.getrandbits(64):016x}"
                synthetic_dog(breed, rng).save(root / "train" / f"{image_id}.jpg")
                writer.writerow([image_id, breed])
    return root


def write_stanford(root: Path, per_breed: int = 6, seed: int = 2) -> Path:
    rng = random.Random(seed)
    for breed, synset in STANFORD_SYNSETS.items():
        folder = root / "Images" / synset
        folder.mkdir(parents=True)
        for i in range(per_breed):
            synthetic_dog(breed, rng).save(folder / f"{synset.split('-')[0]}_{i}.jpg")
    return root


@pytest.fixture(scope="session")
def folders_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folders(tmp_path_factory.mktemp("folders"), per_breed=16)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, folders_data: Path, cache_dir: Path) -> Path:
    """A stage-1 checkpoint (its prior: the fitted Gaussians) trained for three epochs on the synthetic
    folder-per-breed set, then evaluated."""
    from training.evaluate import evaluate
    from training.train import main as train

    out = tmp_path_factory.mktemp("tiny-checkpoint")
    train(
        [
            "--data",
            str(folders_data),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--cache-dir",
            str(cache_dir),
            "--no-progress",
            "--kl-warmup-epochs",
            "1",
            "--lr",
            "3e-3",
            *TINY_RUN,
        ]
    )
    evaluate(out, folders_data, fid_samples=0, cache_dir=cache_dir)
    return out


@pytest.fixture(scope="session")
def tiny_diffusion_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> Path:
    """The tiny checkpoint with a latent diffusion prior (what the default checkpoint has), then evaluated."""
    from training.evaluate import evaluate
    from training.prior import main as fit_prior
    from training.sampling import main as choose_sampling

    prior = tmp_path_factory.mktemp("tiny-prior")
    fit_prior(
        [
            "--init-from",
            str(tiny_checkpoint),
            "--data",
            str(folders_data),
            "--out",
            str(prior),
            "--steps",
            "40",
            "--batch-size",
            "16",
            "--channels",
            "16",
            "--blocks",
            "1",
            "--log-every",
            "20",
            "--cache-dir",
            str(cache_dir),
            "--no-progress",
        ]
    )
    out = tmp_path_factory.mktemp("tiny-diffusion")
    choose_sampling([str(prior), "--out", str(out), "--set", "steps=4", "guidance=2"])  # one candidate: no FID
    evaluate(out, folders_data, fid_samples=0, cache_dir=cache_dir)
    return out


@pytest.fixture(scope="session")
def distilled_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> Path:
    """The tiny diffusion checkpoint with a distilled 2-step student (its teacher kept)."""
    from training.distill import main as distill

    out = tmp_path_factory.mktemp("tiny-student")
    distill(
        [
            "--init-from", str(tiny_diffusion_checkpoint), "--data", str(folders_data), "--out", str(out),
            "--student-steps", "2", "--steps", "60", "--batch-size", "16", "--log-every", "20", "--lr", "1e-3",
            "--cache-dir", str(cache_dir), "--no-progress",
        ]
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def identifier_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> Path:
    """The tiny diffusion checkpoint with a breed identifier on the pretrained trunk (what the default has), read at
    64 px to stay fast, then evaluated."""
    from training.evaluate import evaluate
    from training.identifier import main as train_identifier

    out = tmp_path_factory.mktemp("tiny-identifier")
    train_identifier(
        [
            "--init-from", str(tiny_diffusion_checkpoint), "--data", str(folders_data), "--out", str(out),
            "--resolution", "64", "--views", "3", "--epochs", "30", "--batch-size", "16", "--lr", "1e-2",
            "--calibration-share", "0.2", "--cache-dir", str(cache_dir), "--no-progress",
        ]
    )  # fmt: skip
    evaluate(out, folders_data, fid_samples=0, cache_dir=cache_dir)
    return out
