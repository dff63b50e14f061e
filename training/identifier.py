"""Train the breed identifier of a checkpoint: a linear head on the frozen pretrained trunk, temperature-scaled.

    python -m training.identifier --init-from runs/dogs120/reader --data ../shared/kaggle-dog-breed-identification \
        ../shared/dogs --out runs/dogs120/identifier --resolution 224 --views 3

The trunk (EfficientNet-Lite0, ``model/trunk.py``) reads every photo of the data once per view, at ``--resolution``
px from the 128-px cached photo: view 0 is the whole photo, view 1 its mirror image, views 2.. random resized crops
with random flips (seeded by photo and view). Its pooled embeddings are cached on disk (``--cache-dir``) for every
photo, so another split or head reuses them; the head is then fitted in seconds: class-balanced cross-entropy
(every breed weighs the same, whatever its photo count), AdamW, a fixed schedule. The same embeddings, PCA-whitened
to ``--embedding-dim`` numbers, give each breed a Gaussian (``model/breed_space.py``): ancestry weighs breed mixes
in that space.

Three sets of photos are kept out of the head's training:

* the checkpoint's held-out split (its card's), reported as it always was: **optimistic** for this trunk, since the
  Kaggle photos and most of ``../shared/dogs`` are ImageNet *training* photos the trunk has seen (with ImageNet's
  labels, not ours);
* every ``ILSVRC2012_val_*`` photo (ImageNet's validation set, never seen by the trunk; 550 photos of 11 Imagewoof
  breeds in ``../shared/dogs``), reported on its own: the honest number;
* ``--calibration-share`` of every breed's training photos (drawn like the held-out split: the same share of each
  breed), on which the temperature is fitted (minimum NLL of the served probabilities),
  so that "0.40 golden retriever" is right about 40 % of the time.

The autoencoder, prior, student and reader are copied unchanged; the card gains ``identifier`` and the stage's
metrics (``identifier-metrics.json``): top-1 / top-5 and expected calibration error on both reported sets, before
and after temperature scaling, and the dog probability's quantiles on real dog photos.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import checkpoint, trunk
from model.identifier import BreedIdentifier, IdentifierConfig
from model.imaging import at_side
from model.prior import DogModel
from training.common import command_args, git_commit, lr_at, next_card, resolve_device, set_threads
from training.data import (
    ImageArray,
    default_cache_dir,
    find_photos,
    held_out_photos,
    limit_per_breed,
    load_images,
    to_tensor,
    training_ids,
)

METRICS_FILE = "identifier-metrics.json"
IMAGENET_VAL_PREFIX = "ILSVRC2012_val_"
SOURCE_SIZE = 128  # the cached photos' side (the data's shorter side)
TRUNK_BATCH = 8  # the trunk runs fastest per image in small batches on a CPU (cache-sized activations)
ECE_BINS = 15


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.identifier", description=__doc__.split("\n")[0])
    p.add_argument("--init-from", type=Path, required=True, help="the checkpoint that gets the identifier")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="the data folders it was trained on")
    p.add_argument("--out", type=Path, required=True, help="output folder for the new checkpoint")
    p.add_argument("--resolution", type=int, default=224, help="side the trunk reads photos at")
    p.add_argument("--views", type=int, default=3, help="views of each training photo (>= 2: whole, mirrored, crops)")
    p.add_argument("--min-crop", type=float, default=0.4, help="smallest share of the photo a random crop keeps")
    p.add_argument(
        "--calibration-share", type=float, default=0.04, help="share of each breed's training photos kept to fit T"
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--dog-threshold", type=float, default=0.1, help="dog probability below which a photo is flagged")
    p.add_argument(
        "--embedding-dim",
        type=int,
        default=64,
        help="whitened numbers of the per-breed Gaussians over the training photos' embeddings that ancestry weighs "
        "mixes in (0: none, ancestry by the latent only)",
    )
    p.add_argument(
        "--test-flip", action="store_true", help="read each photo and its mirror image (no gain measured; 2x the time)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="photo and embedding cache (default ~/.cache/vae-dogs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bars (logs stay)")
    args = p.parse_args(argv)
    if args.views < 2 or args.epochs < 1 or args.batch_size < 1 or args.resolution < 32:
        p.error("--views must be at least 2, --epochs and --batch-size positive, --resolution at least 32")
    if not 0 < args.min_crop <= 1 or not 0 <= args.dog_threshold <= 1 or not 0 < args.calibration_share < 1:
        p.error("--min-crop must lie in (0, 1], --dog-threshold in [0, 1] and --calibration-share in (0, 1)")
    if not 0 <= args.embedding_dim <= trunk.FEATURES:
        p.error(f"--embedding-dim must lie in [0, {trunk.FEATURES}]")
    return args


def view_of(images: torch.Tensor, view: int, first: int, min_share: float) -> torch.Tensor:
    """View ``view`` of a batch whose first photo is row ``first`` of its set: 0 whole, 1 mirrored, 2.. a random
    square crop of ``min_share``..1 of the area with a random flip, the same for a photo every time."""
    if view == 0:
        return images
    if view == 1:
        return images.flip(3)
    side = images.shape[-1]
    out = []
    for i, image in enumerate(images):
        rng = random.Random(f"{view}-{first + i}")
        size = max(8, round(side * (min_share + (1 - min_share) * rng.random()) ** 0.5))
        top, left = rng.randint(0, side - size), rng.randint(0, side - size)
        crop = image[:, top : top + size, left : left + size]
        out.append(crop.flip(2) if rng.random() < 0.5 else crop)
    return torch.stack([at_side(c[None], side)[0] for c in out])


@torch.inference_mode()
def embeddings(
    backbone: trunk.EfficientNetLite0,
    photos: ImageArray,
    view: int,
    device: torch.device,
    resolution: int = 224,
    min_crop: float = 0.4,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> np.ndarray:
    """(N, 1280) float16 pooled embeddings of one view of every photo (``SOURCE_SIZE`` px) read at ``resolution``,
    cached by photo ids, view and settings (the crops are seeded by the photo's row, so the cache holds for one photo
    list: the whole data set's)."""
    spec = f"{trunk.WEIGHTS_SHA256}|{resolution}|{view}|{min_crop}|{SOURCE_SIZE}|" + "\n".join(photos.ids)
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    path = (cache_dir or default_cache_dir()) / "embeddings" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    out = np.empty((len(photos.ids), trunk.FEATURES), np.float16)
    bar = tqdm(
        range(0, len(photos.ids), TRUNK_BATCH),
        desc=f"trunk embeddings, view {view} ({len(photos.ids)} photos)",
        disable=not progress,
        mininterval=5,
    )
    for i in bar:
        x = view_of(to_tensor(photos.pixels[i : i + TRUNK_BATCH]), view, i, min_crop)
        out[i : i + TRUNK_BATCH] = backbone.features(at_side(x, resolution).to(device)).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return out


def calibration_ids(train_ids: list[str], breed_of: dict[str, str], share: float, seed: int) -> list[str]:
    """``share`` of each breed's training photos (at least one; a seeded shuffle per breed), kept out of the head's
    training: drawn like the held-out split, so the temperature fits the breeds in the proportions they are met."""
    by_breed: dict[str, list[str]] = {}
    for i in sorted(train_ids):
        by_breed.setdefault(breed_of[i], []).append(i)
    chosen = []
    for breed, ids in sorted(by_breed.items()):
        random.Random(f"calibration-{seed}-{breed}").shuffle(ids)
        chosen += ids[: min(max(1, math.ceil(share * len(ids))), len(ids) - 1)]
    return sorted(chosen)


def served_probabilities(logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """The probabilities the service gives: softmax(logits / T) averaged over the views read (photo, mirror)."""
    return torch.stack([(lg / temperature).softmax(-1) for lg in logits]).mean(0)


def fit_temperature(logits: list[torch.Tensor], labels: torch.Tensor) -> float:
    """The T of least negative log-likelihood of the served probabilities (a 1-D search, log-spaced then refined)."""

    def nll(t: float) -> float:
        return float(-served_probabilities(logits, t).clamp_min(1e-12).log().gather(1, labels[:, None]).mean())

    grid = np.exp(np.linspace(np.log(0.2), np.log(10), 81))
    best = min(grid, key=nll)
    fine = best * np.exp(np.linspace(-0.05, 0.05, 21))
    return float(min(fine, key=nll))


def calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error of the top answer (equal-width confidence bins) and the reliability diagram's
    points: per bin, mean confidence, accuracy and count."""
    confidence, guess = probs.max(1)
    correct = (guess == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece, diagram = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        n = int(inside.sum())
        if n:
            conf, acc = float(confidence[inside].mean()), float(correct[inside].mean())
            ece += n / len(labels) * abs(conf - acc)
            diagram.append({"confidence": conf, "accuracy": acc, "count": n})
    return {"ece": ece, "reliability": diagram}


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    top = probs.topk(min(5, probs.shape[1]), dim=1).indices
    return float((top[:, 0] == labels).float().mean()), float((top == labels[:, None]).any(1).float().mean())


def train_head(
    head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace
) -> list[dict[str, float]]:
    """Class-balanced cross-entropy on the cached embeddings; returns per-epoch training loss and top-1."""
    counts = torch.bincount(labels, minlength=head.out_features).float().clamp_min(1)
    class_weight = counts.sum() / (len(counts) * counts)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    steps = max(1, len(labels) // args.batch_size)
    history = []
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(labels), generator=generator)
        running, correct = 0.0, 0
        for i in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at((epoch - 1) * steps + i, args.epochs * steps, args.lr, warmup=steps)
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            logits = head(features[idx])
            loss = F.cross_entropy(logits, labels[idx], weight=class_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item()
            correct += int((logits.argmax(1) == labels[idx]).sum())
        history.append({"epoch": epoch, "loss": running / steps, "train_top1": correct / (steps * args.batch_size)})
    return history


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    source, card = checkpoint.load(args.init_from, device)
    breeds = [b["name"] for b in card["breeds"]]
    photos = limit_per_breed(find_photos(args.data), (card.get("data") or {}).get("max_per_breed"))
    if photos.breeds != breeds:
        raise SystemExit(f"{args.data} has breeds {photos.breeds}, but the checkpoint was trained on {breeds}")
    images = load_images(photos, SOURCE_SIZE, args.cache_dir)
    index = {b: i for i, b in enumerate(breeds)}
    breed_of = dict(zip(images.ids, images.breeds, strict=True))

    held_out = held_out_photos(card, images, args.data)
    pool = [i for i in training_ids(card, images) if not i.startswith(IMAGENET_VAL_PREFIX)]
    calibration = calibration_ids(pool, breed_of, args.calibration_share, args.seed)
    kept_out = set(calibration)
    train = images.select([i for i in pool if i not in kept_out])
    imagenet_val = images.select(sorted(i for i in images.ids if i.startswith(IMAGENET_VAL_PREFIX)))
    sets = {"held_out": held_out, "imagenet_val": imagenet_val, "calibration": images.select(calibration)}
    row = {i: n for n, i in enumerate(images.ids)}
    print(
        f"identifier on {device}: {len(train.ids)} training photos x {args.views} views at {args.resolution} px; "
        f"{len(calibration)} for the temperature, {len(held_out.ids)} held out, {len(imagenet_val.ids)} from "
        "ImageNet's validation set (never seen by the trunk)",
        flush=True,
    )

    backbone = trunk.load_trunk().to(device)
    torch.manual_seed(args.seed)
    test_views = [0, 1] if args.test_flip else [0]
    cfg = IdentifierConfig(
        n_breeds=len(breeds),
        image_size=args.resolution,
        test_flip=args.test_flip,
        dog_threshold=args.dog_threshold,
        embedding_dim=args.embedding_dim,
    )
    identifier = BreedIdentifier(cfg, backbone).to(device)

    def embedded(view: int) -> np.ndarray:
        settings = {"resolution": args.resolution, "min_crop": args.min_crop, "cache_dir": args.cache_dir}
        return embeddings(backbone, images, view, device, **settings, progress=not args.no_progress)

    train_rows = [row[i] for i in train.ids]
    features = torch.cat([torch.from_numpy(embedded(v)[train_rows]) for v in range(args.views)])
    labels = torch.tensor([index[b] for b in train.breeds]).repeat(args.views)
    history = train_head(identifier.head, features.float().to(device), labels.to(device), args)
    print(f"head: training loss {history[-1]['loss']:.3f}, top-1 {history[-1]['train_top1']:.3f}", flush=True)
    if identifier.breed_space is not None:  # the same photos and views as the head
        identifier.breed_space.fit(features.float(), labels)

    metrics: dict[str, Any] = {
        "training_photos": len(train.ids),
        "calibration_photos": len(calibration),
        "views": args.views,
    }
    readings = {}
    with torch.inference_mode():
        for name, photos_set in sets.items():
            rows = [row[i] for i in photos_set.ids]
            views = [torch.from_numpy(embedded(v)[rows]).float() for v in test_views]
            logits = [identifier.logits(f.to(device)).cpu() for f in views]
            dog = torch.stack([identifier.dog_probability(f.to(device)).cpu() for f in views]).mean(0)
            readings[name] = (logits, torch.tensor([index[b] for b in photos_set.breeds]), dog)
    temperature = fit_temperature(*readings["calibration"][:2])
    identifier.cfg = replace(cfg, temperature=temperature)
    metrics["temperature"] = temperature
    for name in ("held_out", "imagenet_val"):
        logits, labels_set, dog = readings[name]
        if not len(labels_set):
            metrics[name] = {"photos": 0}
            continue
        raw, scaled = served_probabilities(logits, 1.0), served_probabilities(logits, temperature)
        top1, top5 = accuracy(scaled, labels_set)
        metrics[name] = {
            "photos": len(labels_set),
            "top1": top1,
            "top5": top5,
            "ece_before_scaling": calibration_error(raw, labels_set)["ece"],
            **calibration_error(scaled, labels_set),
            "flagged_not_a_dog": float((dog < args.dog_threshold).float().mean()),
            "dog_probability_quantiles": {q: float(dog.quantile(float(q))) for q in ("0.001", "0.01", "0.05", "0.5")},
        }
        print(
            f"{name}: top-1 {top1:.3f}, top-5 {top5:.3f}, ECE {metrics[name]['ece_before_scaling']:.3f} -> "
            f"{metrics[name]['ece']:.3f} (T = {temperature:.2f}), flagged as no dog "
            f"{metrics[name]['flagged_not_a_dog']:.3%}",
            flush=True,
        )

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_json(out / METRICS_FILE, {"head_training": history, **metrics})
    model = DogModel(source.vae, source.prior, source.sampling, identifier)
    stage = {"command": "training.identifier", "args": command_args(args), "git_commit": git_commit()}
    checkpoint.save(model, next_card(card, stage | {"metrics": metrics}), out)
    print(f"wrote {out}", flush=True)
    return out


if __name__ == "__main__":
    main()
