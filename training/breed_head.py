"""Train the breed head of a checkpoint on its training photos at a larger size, and write the new checkpoint.

    python -m training.breed_head --init-from runs/dogs120/prior --data ../shared/kaggle-dog-breed-identification \
        ../shared/dogs --out runs/dogs120/breed-head --resolution 128 --epochs 30 --channels 48,96,192,384

The breed head ``q(y|x)`` that stage 1 trains next to the autoencoder reads 64-px photos and learns from the same
batches; for 120 breeds that is too little. This command replaces it with a new head (``--channels``) trained alone
at ``--resolution`` on the checkpoint's own training photos (the card's split: no held-out photo is seen), breeds
balanced by sampling, with random resized crops, flips and label smoothing, for a fixed schedule (the last epoch is
kept; the held-out top-1 / top-5 are logged each epoch, never used to choose). The autoencoder, prior and sampler
settings are copied unchanged; the new card's config has the head's channels and ``classifier_image_size``, so
``/identify`` reads photos at that size. Resumable (``--resume``) from its last finished epoch. Writes
``breed-head-metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import checkpoint, latent_ops
from model.autoencoder import BreedVAE
from model.prior import DogModel
from training.common import (
    RESUME_STATE,
    command_args,
    git_commit,
    load_resume_state,
    lr_at,
    next_card,
    resolve_device,
    save_resume_state,
    set_threads,
)
from training.data import (
    balanced_indices,
    find_photos,
    held_out_photos,
    limit_per_breed,
    load_images,
    to_tensor,
    training_ids,
)

METRICS_FILE = "breed-head-metrics.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.breed_head", description=__doc__.split("\n")[0])
    p.add_argument("--init-from", type=Path, required=True, help="the checkpoint whose breed head is replaced")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="the data folders it was trained on")
    p.add_argument("--out", type=Path, required=True, help="output folder for the new checkpoint")
    p.add_argument("--resolution", type=int, choices=[64, 128], default=128, help="side the head reads photos at")
    p.add_argument("--channels", default="48,96,192,384", help="the head's widths per stride-2 stage")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=30, help="length of the schedule; the last epoch is kept")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this epoch (--resume goes on)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--min-crop", type=float, default=0.35, help="smallest share of the photo a random crop keeps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last epoch saved in --out")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache (default ~/.cache/vae-dogs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bar (logs stay)")
    args = p.parse_args(argv)
    try:
        args.channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        p.error("--channels: comma-separated integers, e.g. 48,96,192,384")
    if min(args.epochs, args.batch_size, *args.channels) < 1:
        p.error("--epochs, --batch-size and --channels must be positive")
    if not 0 < args.min_crop <= 1:
        p.error("--min-crop must lie in (0, 1]")
    return args


def random_resized_crops(batch: torch.Tensor, generator: torch.Generator, min_share: float) -> torch.Tensor:
    """Per image: a random square crop of ``min_share``..1 of the side's area, resized back, and a random flip."""
    n, _, side, _ = batch.shape
    shares = min_share + (1 - min_share) * torch.rand(n, generator=generator)
    sizes = (shares.sqrt() * side).round().long().clamp(8, side).tolist()
    out = []
    for image, size in zip(batch, sizes, strict=True):
        top, left = (torch.randint(0, side - size + 1, (2,), generator=generator)).tolist()
        crop = image[None, :, top : top + size, left : left + size]
        if size != side:
            crop = F.interpolate(crop, size=(side, side), mode="bilinear", align_corners=False, antialias=False)
        out.append(crop[0])
    crops = torch.stack(out)
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


@torch.no_grad()
def top_k_accuracy(model: DogModel, pixels: Any, labels: torch.Tensor) -> tuple[float, float]:
    probs = torch.cat(
        [latent_ops.breed_probabilities(model, to_tensor(pixels[i : i + 256])) for i in range(0, len(pixels), 256)]
    )
    top = probs.topk(min(5, probs.shape[1]), dim=1).indices
    return float((top[:, 0] == labels).float().mean()), float((top == labels[:, None]).any(1).float().mean())


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    source, card = checkpoint.load(args.init_from, device)
    cfg = replace(
        source.vae.cfg,
        classifier_channels=args.channels,
        classifier_dropout=args.dropout,
        classifier_image_size=args.resolution,
    )
    torch.manual_seed(args.seed)
    vae = BreedVAE(cfg).to(device)  # a new breed head; everything else is the source's
    kept = {k: v for k, v in source.vae.state_dict().items() if not k.startswith("breed_head.")}
    missing, unexpected = vae.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith("breed_head.") for k in missing), (missing, unexpected)
    model = replace(source, vae=vae)

    breeds = [b["name"] for b in card["breeds"]]
    photos = limit_per_breed(find_photos(args.data), (card.get("data") or {}).get("max_per_breed"))
    if photos.breeds != breeds:
        raise SystemExit(f"{args.data} has breeds {photos.breeds}, but the checkpoint was trained on {breeds}")
    images = load_images(photos, args.resolution, args.cache_dir)
    val = held_out_photos(card, images, args.data)
    train = images.select(training_ids(card, images))
    index = {b: i for i, b in enumerate(breeds)}
    train_y = torch.tensor([index[b] for b in train.breeds])
    val_y = torch.tensor([index[b] for b in val.breeds])

    head = vae.breed_head
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = max(1, len(train.ids) // args.batch_size)
    total = args.epochs * steps_per_epoch
    first_epoch = 1
    if args.resume:
        if not (out / RESUME_STATE).is_file():
            raise SystemExit(f"--resume: no {RESUME_STATE} in {out}; start without --resume")
        state = load_resume_state(out, {"head": head}, {"opt": optimizer})
        if state.get("config") != json.loads(json.dumps(cfg.to_dict())):  # as JSON stores it: lists, not tuples
            raise SystemExit(f"--resume: {out} trains another head ({state.get('config')})")
        first_epoch = state["epoch"] + 1
    elif (out / METRICS_FILE).exists():
        (out / METRICS_FILE).unlink()
    n_params = sum(p.numel() for p in head.parameters())
    print(
        f"breed head: {n_params:,} parameters at {args.resolution} px on {device}; {len(train.ids)} training / "
        f"{len(val.ids)} held-out photos of {len(breeds)} breeds; epochs {first_epoch}..{args.epochs}",
        flush=True,
    )
    last = min(args.epochs, args.stop_after or args.epochs)
    for epoch in range(first_epoch, last + 1):
        generator = torch.Generator().manual_seed(args.seed * 1000 + epoch)  # the same batches after a resume
        order = balanced_indices(train_y, steps_per_epoch * args.batch_size, generator)
        head.train()
        started, running, correct = time.time(), 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"breed head {epoch}/{args.epochs}", disable=args.no_progress)
        for i in bar:
            step = (epoch - 1) * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, args.lr, warmup=min(500, total // 10))
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            x = random_resized_crops(to_tensor(train.pixels[idx.numpy()]), generator, args.min_crop).to(device)
            y = train_y[idx].to(device)
            logits = vae.breed_logits(x)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item()
            correct += int((logits.argmax(1) == y).sum())
            if i % 10 == 9:
                bar.set_postfix(loss=f"{running / (i + 1):.3f}", acc=f"{correct / ((i + 1) * args.batch_size):.3f}")
        head.eval()
        top1, top5 = top_k_accuracy(model, val.pixels, val_y)
        entry = {
            "epoch": epoch,
            "seconds": round(time.time() - started, 1),
            "train_loss": running / steps_per_epoch,
            "train_top1": correct / (steps_per_epoch * args.batch_size),
            "held_out_top1": top1,
            "held_out_top5": top5,
        }
        with open(out / METRICS_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")
        print(
            f"epoch {epoch}: train top-1 {entry['train_top1']:.3f}, held-out top-1 {top1:.3f} / top-5 {top5:.3f}, "
            f"{entry['seconds']:.0f}s",
            flush=True,
        )
        save_resume_state(out, {"head": head}, {"opt": optimizer}, {"epoch": epoch, "config": cfg.to_dict()})

    stage = {"command": "training.breed_head", "args": command_args(args), "git_commit": git_commit()}
    history = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    checkpoint.save(model, next_card(card, stage | {"history": history}), out)
    print(f"wrote {out} (the held-out top-1 of the last epoch: {history[-1]['held_out_top1']:.3f})", flush=True)
    return out


if __name__ == "__main__":
    main()
