"""Dog photo data sets: three on-disk layouts, several roots at once, duplicates removed, a recorded split, and a
preprocessed cache.

Layouts read without conversion (detected in this order):

* **kaggle** — Kaggle *Dog Breed Identification*: ``labels.csv`` with ``id,breed`` and ``train/<id>.jpg``.
* **stanford** — Stanford Dogs: ``Images/n02085620-Chihuahua/*.jpg``; breed = folder name after the
  synset, lower-cased (``chihuahua``). The ``Images`` folder itself may be given too.
* **folders** — one folder per breed: ``images/<breed>/*.jpg`` (what ``../shared/dogs`` is). The
  ``images`` folder itself may be given too.

Several roots (e.g. the Kaggle set and ``../shared/dogs``) are read together, each in its own layout. Photo sets
drawn from one source share photos, so near-duplicates (64-bit difference hashes of the whole photos within
``DUPLICATE_BITS`` bits) are dropped, the first copy kept, *before* the split: no photo can be on both sides.

Decoding JPEGs on two cores is slower than the model, so every photo is decoded once, centre-cropped to a
square, resized to the training resolution and kept in a ``uint8`` array cached on disk.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from model.imaging import load_square

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
STANFORD_FOLDER = re.compile(r"^n\d{8}-(.+)$")
LAYOUTS_HELP = (
    "expected one of: Kaggle (labels.csv with id,breed + train/<id>.jpg), "
    "Stanford Dogs (Images/n02085620-Chihuahua/*.jpg), "
    "or one folder per breed (images/<breed>/*.jpg)"
)


class DataLayoutError(ValueError):
    """The data path matches none of the supported layouts."""


@dataclass(frozen=True)
class Photo:
    id: str
    breed: str
    path: Path


@dataclass(frozen=True)
class DogPhotos:
    roots: tuple[Path, ...]
    layout: str  # one per root, joined by "+"
    photos: list[Photo]

    @property
    def breeds(self) -> list[str]:
        return sorted({p.breed for p in self.photos})

    def counts(self) -> dict[str, int]:
        counts = Counter(p.breed for p in self.photos)
        return {b: counts[b] for b in self.breeds}

    def without(self, ids: set[str]) -> DogPhotos:
        return DogPhotos(self.roots, self.layout, [p for p in self.photos if p.id not in ids])


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_kaggle(root: Path) -> list[Photo]:
    photos = []
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "breed"} <= set(reader.fieldnames):
            raise DataLayoutError(f"{root / 'labels.csv'} has no id,breed header; {LAYOUTS_HELP}")
        for row in reader:
            path = root / "train" / f"{row['id']}.jpg"
            if path.is_file():
                photos.append(Photo(row["id"], row["breed"].strip().lower(), path))
    return photos


def _read_breed_folders(folder: Path, breed_of: callable[[str], str | None]) -> list[Photo]:
    photos = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        breed = breed_of(sub.name)
        if breed is None:
            continue
        photos += [Photo(img.stem, breed, img) for img in _images_in(sub)]
    return photos


def _stanford_breed(name: str) -> str | None:
    match = STANFORD_FOLDER.match(name)
    return match.group(1).lower() if match else None


def _has_stanford_folders(folder: Path) -> bool:
    return folder.is_dir() and any(STANFORD_FOLDER.match(p.name) for p in folder.iterdir() if p.is_dir())


def find_photos(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> DogPhotos:
    """Detect the layout under each root and list their labelled photos, root after root."""
    roots = [data] if isinstance(data, str | os.PathLike) else list(data)
    if not roots:
        raise DataLayoutError(f"no data folder given; {LAYOUTS_HELP}")
    layouts, photos, seen = [], [], {}
    for root in roots:
        layout, found = _find_in(Path(root).expanduser())
        for photo in found:
            if photo.id in seen:
                raise DataLayoutError(f"photo id {photo.id!r} is under both {seen[photo.id]} and {root}")
            seen[photo.id] = root
        layouts.append(layout)
        photos += found
    return DogPhotos(tuple(Path(r).expanduser() for r in roots), "+".join(layouts), photos)


def _find_in(root: Path) -> tuple[str, list[Photo]]:
    if not root.is_dir():
        raise DataLayoutError(f"data path {root} is not a folder; {LAYOUTS_HELP}")
    if (root / "labels.csv").is_file() and (root / "train").is_dir():
        layout, photos = "kaggle", _read_kaggle(root)
    elif _has_stanford_folders(root / "Images"):
        layout, photos = "stanford", _read_breed_folders(root / "Images", _stanford_breed)
    elif _has_stanford_folders(root):
        layout, photos = "stanford", _read_breed_folders(root, _stanford_breed)
    elif (root / "images").is_dir():
        layout, photos = "folders", _read_breed_folders(root / "images", lambda n: n.lower())
    else:
        subfolders = [p for p in root.iterdir() if p.is_dir()]
        if subfolders and any(_images_in(p) for p in subfolders):
            layout, photos = "folders", _read_breed_folders(root, lambda n: n.lower())
        else:
            raise DataLayoutError(f"no dog photos found under {root}; {LAYOUTS_HELP}")
    if not photos:
        raise DataLayoutError(f"the {layout} layout under {root} lists no readable photos; {LAYOUTS_HELP}")
    return layout, photos


# --- duplicates --------------------------------------------------------------------------
DUPLICATE_BITS = 4  # the same photo re-encoded or resized differs in 0-1 bits; different photos in about 32


def difference_hash(path: str) -> int:
    """The 64-bit difference hash of a whole photo: is each cell of a 9x8 grey thumbnail (Lanczos) brighter than its
    right neighbour. Resizing and re-encoding a photo moves it by 0-4 bits; two different photos differ in ~32."""
    with Image.open(path) as img:
        grey = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    return int(np.packbits((grey[:, 1:] > grey[:, :-1]).flatten()).view(">u8")[0])


def photo_hashes(photos: DogPhotos, cache_dir: Path | None = None, workers: int | None = None) -> np.ndarray:
    """(N,) uint64 difference hashes of ``photos``, row for row, cached like the decoded images."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"{_listing_key(photos)}-dhash.npy"
    if path.is_file():
        cached = np.load(path)
        if len(cached) == len(photos.photos):
            return cached
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        jobs = pool.map(difference_hash, [str(p.path) for p in photos.photos], chunksize=256)
        hashes = np.array(list(tqdm(jobs, total=len(photos.photos), desc="hashing photos")), dtype=np.uint64)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, hashes)
    os.replace(tmp, path)
    return hashes


def near_duplicates(hashes: np.ndarray, max_bits: int = DUPLICATE_BITS) -> list[int]:
    """Indices of the images whose hash is within ``max_bits`` of an earlier image's: the copies to drop."""
    dropped = []
    for start in range(0, len(hashes), 512):
        block = hashes[start : start + 512]
        distance = np.bitwise_count(block[:, None] ^ hashes[None, : start + len(block)])
        for row, i in enumerate(range(start, start + len(block))):
            if (distance[row, :i] <= max_bits).any():
                dropped.append(i)
    return dropped


def without_duplicates(photos: DogPhotos, cache_dir: Path | None = None) -> tuple[DogPhotos, list[str]]:
    """``photos`` less the later copy of every near-duplicate pair, and the ids dropped."""
    dropped = [photos.photos[i].id for i in near_duplicates(photo_hashes(photos, cache_dir))]
    return photos.without(set(dropped)), dropped


# --- split -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitRecipe:
    """A seeded split stratified by breed; stored in the checkpoint card."""

    seed: int = 0
    validation_fraction: float = 0.1
    min_validation: int = 10  # photos held out per breed at least (always one left to train on)
    method: str = (
        "per-breed: sort ids, shuffle with random.Random(f'{seed}-{breed}'), "
        "first max(min_validation, ceil(fraction*n)) held out"
    )


def limit_per_breed(photos: DogPhotos, max_per_breed: int | None) -> DogPhotos:
    """The first ``max_per_breed`` photos of each breed in (breed, id) order; all of them for None."""
    if not max_per_breed:
        return photos
    kept: dict[str, int] = {}
    limited = []
    for p in sorted(photos.photos, key=lambda p: (p.breed, p.id)):
        if kept.get(p.breed, 0) < max_per_breed:
            kept[p.breed] = kept.get(p.breed, 0) + 1
            limited.append(p)
    return DogPhotos(photos.roots, photos.layout, limited)


def split_ids(photos: DogPhotos, recipe: SplitRecipe) -> tuple[list[str], list[str]]:
    """Return (train_ids, validation_ids); independent of file-system listing order."""
    by_breed: dict[str, list[str]] = {}
    for p in photos.photos:
        by_breed.setdefault(p.breed, []).append(p.id)
    train, val = [], []
    for breed in sorted(by_breed):
        ids = sorted(by_breed[breed])
        random.Random(f"{recipe.seed}-{breed}").shuffle(ids)
        wanted = max(recipe.min_validation, int(np.ceil(recipe.validation_fraction * len(ids))))
        n_val = min(len(ids) - 1, wanted) if len(ids) > 1 else 0
        val += ids[:n_val]
        train += ids[n_val:]
    return sorted(train), sorted(val)


# --- decoding and cache ------------------------------------------------------------------
def _load_for_pool(args: tuple[str, int]) -> np.ndarray:
    return load_square(args[0], args[1])


def _listing_key(photos: DogPhotos, size: int | None = None) -> str:
    listing = "\n".join(f"{p.id}\t{p.breed}\t{p.path.stat().st_size}" for p in photos.photos)
    roots = "\n".join(str(r.resolve()) for r in photos.roots)
    return hashlib.sha256(f"{roots}\n{size}\n{listing}".encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vae-dogs"


@dataclass
class ImageArray:
    """All photos of a data set at one resolution, in memory."""

    ids: list[str]
    breeds: list[str]
    pixels: np.ndarray  # (N, S, S, 3) uint8

    def select(self, ids: list[str]) -> ImageArray:
        index = {i: n for n, i in enumerate(self.ids)}
        rows = [index[i] for i in ids]
        return ImageArray([self.ids[r] for r in rows], [self.breeds[r] for r in rows], self.pixels[rows])


def load_images(photos: DogPhotos, size: int, cache_dir: Path | None = None, workers: int | None = None) -> ImageArray:
    """Decode every photo at ``size`` px, reusing the on-disk cache when the photo list is unchanged."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = _listing_key(photos, size)
    npy, meta = cache_dir / f"{key}-{size}px.npy", cache_dir / f"{key}-{size}px.json"
    ids = [p.id for p in photos.photos]
    breeds = [p.breed for p in photos.photos]
    if npy.is_file() and meta.is_file() and json.loads(meta.read_text()) == ids:
        return ImageArray(ids, breeds, np.load(npy, mmap_mode=None))
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    jobs = [(str(p.path), size) for p in photos.photos]
    with ProcessPoolExecutor(workers) as pool:
        arrays = list(
            tqdm(pool.map(_load_for_pool, jobs, chunksize=64), total=len(jobs), desc=f"decoding photos to {size}px")
        )
    pixels = np.stack(arrays)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_suffix(".tmp.npy")
    np.save(tmp, pixels)
    os.replace(tmp, npy)
    meta.write_text(json.dumps(ids))
    return ImageArray(ids, breeds, pixels)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)


def augment(batch: torch.Tensor, generator: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """Random horizontal flip and a small random translation (reflect-padded crop) per image."""
    n, _, h, w = batch.shape
    flip = torch.rand(n, generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    if max_shift <= 0:
        return batch
    padded = torch.nn.functional.pad(batch, (max_shift,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


def balanced_indices(labels: torch.Tensor, n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Draw indices with replacement so every breed is equally likely (small breeds are learned too)."""
    counts = torch.bincount(labels).float()
    weights = 1.0 / counts[labels]
    return torch.multinomial(weights, n_samples, replacement=True, generator=generator)


def held_out_photos(card: dict[str, Any], images: ImageArray, data: object) -> ImageArray:
    """The checkpoint's held-out photos (its card's split) among ``images``; exits if any is missing."""
    val_ids = card["split"]["validation_ids"]
    missing = sorted(set(val_ids) - set(images.ids))
    if missing:
        raise SystemExit(f"{len(missing)} held-out photos of this checkpoint are not under {data} (e.g. {missing[:3]})")
    return images.select(val_ids)


def training_ids(card: dict[str, Any], images: ImageArray) -> list[str]:
    """The checkpoint's training photos among ``images``: every photo but the held-out ones and the duplicates its
    split dropped (a dropped copy of a held-out photo must not train a later stage)."""
    excluded = set(card["split"]["validation_ids"]) | set(card["split"].get("excluded_ids", []))
    return [i for i in images.ids if i not in excluded]
