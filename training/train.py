"""Train the first stage (the breed-conditional VAE) on dog photos and write a checkpoint.

The default checkpoint's stage 1 (a spatial latent of 8 channels at 8x8; ``recipes/dogs64.toml`` has every stage):

    python -m training --data ../shared/dogs --out runs/dogs64/vae --epochs 16 --stop-after 13 \
        --channels 32,64,128 --latent-channels 8

Several processes with DistributedDataParallel (gloo on CPU, nccl on GPU):

    torchrun --standalone --nproc_per_node=4 -m training --data ../shared/dogs --out runs/dogs64

Resume a stopped run from its last finished epoch (same --out): add ``--resume``.

More epochs for the decoder alone (the same loss; encoder, breed head, latent Gaussians and the prior stay fixed, so
the latents, the checkpoint's prior and its sampler settings stay valid; one process):

    python -m training --data ../shared/dogs --out runs/dogs64/decoder --init-from runs/dogs64/sampling \
        --decoder-only --epochs 8 --lr 3e-4

The plain-VAE baseline (no breed input to the decoder, fixed pixel scale, samples from N(0, I)): ``--plain``.

Each epoch writes ``metrics.jsonl`` (one JSON line), ``figures/samples-epochNNN.png`` (prior samples, one row per
breed) and ``figures/reconstructions-epochNNN.png`` (held-out photos above their reconstructions; that figure shows
real photos, so keep it out of anything you publish), and the checkpoint (``model.safetensors`` + ``card.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model import checkpoint, latent_ops
from model.autoencoder import BreedVAE, VAEConfig
from model.imaging import grid, labelled_rows
from model.prior import DogModel, GaussianPrior
from training.common import (
    RESUME_STATE,
    command_args,
    git_commit,
    load_resume_state,
    lr_at,
    posterior_means,
    resolve_device,
    save_resume_state,
)
from training.data import (
    SplitRecipe,
    augment,
    balanced_indices,
    find_photos,
    limit_per_breed,
    load_images,
    photo_hashes,
    split_ids,
    to_tensor,
    without_duplicates,
)
from training.losses import (
    LossWeights,
    PatchDiscriminator,
    Stage1Objective,
    held_out_metrics,
    hinge_discriminator_loss,
)
from training.perceptual import load_lpips


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="data folders, each in the Kaggle, Stanford Dogs or images/<breed>/ layout; near-duplicate "
        "photos across them are dropped (the first folder's copy kept) before the split",
    )
    p.add_argument("--out", required=True, help="output folder for the checkpoint, metrics and figures")
    p.add_argument("--resolution", type=int, default=64, choices=(64, 128))
    p.add_argument("--epochs", type=int, default=30, help="length of the learning-rate schedule")
    p.add_argument(
        "--stop-after", type=int, default=None, help="stop after this epoch of the schedule (--resume goes on)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument(
        "--latent-dim", type=int, default=128, help="size of a vector latent (ignored with --latent-channels)"
    )
    p.add_argument(
        "--latent-channels",
        type=int,
        default=0,
        help="C > 0: a spatial latent of C channels at the encoder's last resolution "
        "(latent_dim = C * side^2, e.g. 8 channels at 8x8 with --channels 32,64,128)",
    )
    p.add_argument("--channels", type=str, default="32,64,128,256", help="VAE widths per stride-2 stage")
    p.add_argument("--classifier-channels", type=str, default="32,64,128,256")
    p.add_argument(
        "--shared-covariance",
        action="store_true",
        help="one covariance for every breed's latent Gaussian (per-breed ones cost n_breeds * latent_dim^2 floats: "
        "503 MB for 120 breeds of 1,024); may be switched on when resuming",
    )
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--kl-warmup-epochs", type=float, default=3.0)
    p.add_argument("--generated-breed-weight", type=float, default=3.0)
    p.add_argument(
        "--perceptual-weight",
        type=float,
        default=0.0,
        help="shift-tolerant LPIPS of the reconstructions, per pixel like the pixel term (VQGAN: 1)",
    )
    p.add_argument("--perceptual-images", type=int, default=16, help="images of each batch the perceptual term scores")
    p.add_argument(
        "--adversarial-weight",
        type=float,
        default=0.0,
        help="hinge loss against a patch discriminator, times the adaptive weight (VQGAN: 0.5); one process",
    )
    p.add_argument("--adversarial-start", type=int, default=0, help="training step from which the discriminator plays")
    p.add_argument("--discriminator-lr", type=float, default=2e-4)
    p.add_argument(
        "--discriminator-channels",
        type=int,
        default=64,
        help="width of the patch discriminator's first layer (VQGAN: 64, for 256-px images; at 64 px, 32 costs a "
        "quarter of the compute)",
    )
    p.add_argument(
        "--decoder-only",
        action="store_true",
        help="fine-tune only the decoder (with the breed embeddings and pixel scale) of --init-from; the "
        "encoder, breed head, latent Gaussians and prior stay fixed, so its latents and prior stay valid",
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="the plain-VAE baseline: decoder without breed input, fixed pixel scale, no generated-breed "
        "term, samples from N(0, I)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation-fraction", type=float, default=0.1, help="share of each breed's photos held out")
    p.add_argument("--min-validation", type=int, default=10, help="photos held out per breed at least")
    p.add_argument("--max-per-breed", type=int, default=None, help="use at most this many photos per breed")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache (default ~/.cache/vae-dogs)")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch saved in --out")
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from this checkpoint's weights (fine-tuning; loss weights may differ, architecture may not)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--no-progress", action="store_true", help="hide tqdm bars (logs stay)")
    args = p.parse_args(argv)
    if min(args.epochs, args.batch_size, args.latent_dim, args.discriminator_channels) < 1 or args.latent_channels < 0:
        p.error(
            "--epochs, --batch-size, --latent-dim and --discriminator-channels must be positive, "
            "--latent-channels must not be negative"
        )
    if args.stop_after is not None and not 1 <= args.stop_after <= args.epochs:
        p.error("--stop-after must lie between 1 and --epochs")
    non_negative = ("lr", "weight_decay", "beta", "kl_warmup_epochs", "generated_breed_weight", "perceptual_weight",
                    "perceptual_images", "adversarial_weight", "adversarial_start", "discriminator_lr")  # fmt: skip
    bad = [f"--{name.replace('_', '-')}" for name in non_negative if not getattr(args, name) >= 0]  # also catches NaN
    if bad:
        p.error(f"{', '.join(bad)}: must be a number that is not negative")
    if not 0 < args.validation_fraction < 1:
        p.error("--validation-fraction must lie strictly between 0 and 1")
    if args.min_validation < 0:
        p.error("--min-validation must not be negative")
    if args.max_per_breed is not None and args.max_per_breed < 2:
        p.error("--max-per-breed must be at least 2 (one photo to train on, one held out)")
    for flag in ("channels", "classifier_channels"):
        try:
            widths = _ints(getattr(args, flag))
        except ValueError:
            widths = ()
        if not widths or min(widths) < 1:
            p.error(f"--{flag.replace('_', '-')} must be a comma-separated list of positive integers, e.g. 32,64,128")
    if args.adversarial_weight and "RANK" in os.environ:
        p.error("--adversarial-weight trains a discriminator in one process: not under torchrun")
    if args.decoder_only and (not args.init_from or args.resume or "RANK" in os.environ):
        p.error(
            "--decoder-only fine-tunes a trained checkpoint in one process: give --init-from, not torchrun or --resume"
        )
    return args


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(",") if c.strip())


class Distributed:
    """Rank bookkeeping; a no-op outside torchrun."""

    def __init__(self, device_arg: str) -> None:
        self.enabled = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = resolve_device(device_arg)
        if device.type == "cuda" and device.index is None and self.enabled:
            device = torch.device(f"cuda:{local_rank}")
        self.device = device
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.enabled:
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            values = values.to(self.device)
            dist.all_reduce(values)
        return values.cpu()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            # Every rank past its last collective before any tears gloo down (one CI run saw rank 0 abort
            # with "terminate called without an active exception" at the end of a run).
            dist.barrier()
            dist.destroy_process_group()


def make_optimizer(vae: BreedVAE, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in vae.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and name != "breed_embeddings" else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def write_figures(model: DogModel, breeds: list[str], val_pixels: np.ndarray, out: Path, epoch: int) -> None:
    model.eval()
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    per_breed = 8
    samples = torch.cat(
        [latent_ops.sample(model, per_breed, breed=b, seed=epoch * 1000 + b) for b in range(len(breeds))]
    )
    labelled_rows(samples, breeds, columns=per_breed).save(figures / f"samples-epoch{epoch:03d}.png")
    originals = to_tensor(val_pixels[:: max(1, len(val_pixels) // 16)][:16])
    recon = latent_ops.reconstruct(model, originals)
    grid(torch.cat([originals, recon]), columns=16).save(figures / f"reconstructions-epoch{epoch:03d}.png")
    model.vae.train()


def freeze_all_but_decoder(vae: BreedVAE) -> None:
    """Freeze what defines z and the breed (encoder, breed head) for a stage that trains the decoder alone: the
    checkpoint's latents, its Gaussians and its prior stay valid. The frozen parts stay in eval mode (no dropout)."""
    vae.encoder.requires_grad_(False)
    vae.breed_head.requires_grad_(False)


def stage_record(command: str, args: argparse.Namespace) -> dict[str, Any]:
    """One entry of the card's ``stages``: how this checkpoint was made, after its source's entries."""
    return {"command": command, "args": command_args(args), "git_commit": git_commit()}


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    ddp = Distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    elif ddp.device.type == "cpu" and ddp.world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ddp.world))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    show_progress = ddp.main and not args.no_progress

    photos = limit_per_breed(find_photos(args.data), args.max_per_breed)
    # Rank 0 fills the caches; the others wait and then read them.
    if ddp.main:
        photo_hashes(photos, args.cache_dir)
    ddp.barrier()
    photos, duplicates = without_duplicates(photos, args.cache_dir)  # before the split: no photo on both sides
    if ddp.main:
        images = load_images(photos, args.resolution, args.cache_dir)
    ddp.barrier()
    if not ddp.main:
        images = load_images(photos, args.resolution, args.cache_dir)
    breeds = photos.breeds
    breed_index = {b: i for i, b in enumerate(breeds)}
    recipe = SplitRecipe(args.seed, args.validation_fraction, args.min_validation)
    train_ids, val_ids = split_ids(photos, recipe)
    train, val = images.select(train_ids), images.select(val_ids)
    train_labels = torch.tensor([breed_index[b] for b in train.breeds])
    val_labels = torch.tensor([breed_index[b] for b in val.breeds])
    if ddp.main:
        print(
            f"{photos.layout} layout: {len(photos.photos)} photos ({len(duplicates)} duplicates dropped), "
            f"{len(breeds)} breeds; "
            f"{len(train_ids)} train / {len(val_ids)} held out; device {ddp.device}, {ddp.world} process(es)",
            flush=True,
        )

    channels = _ints(args.channels)
    latent_side = args.resolution // 2 ** len(channels)
    plain = dict(breed_embed_dim=0, learned_pixel_scale=False) if args.plain else {}
    cfg = VAEConfig(
        n_breeds=len(breeds),
        image_size=args.resolution,
        latent_dim=args.latent_channels * latent_side**2 if args.latent_channels else args.latent_dim,
        latent_channels=args.latent_channels,
        channels=channels,
        classifier_channels=_ints(args.classifier_channels),
        shared_covariance=args.shared_covariance,
        **plain,
    )
    weights = LossWeights(
        beta=args.beta,
        generated_breed_weight=0.0 if args.plain else args.generated_breed_weight,
        perceptual_weight=args.perceptual_weight,
        perceptual_images=args.perceptual_images,
        adversarial_weight=args.adversarial_weight,
        adversarial_start=args.adversarial_start,
    )
    stages: list[dict[str, Any]] = []
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    vae = BreedVAE(cfg).to(ddp.device)
    model = DogModel(vae, GaussianPrior(vae))
    if args.init_from and not args.resume:
        source, source_card = checkpoint.load(args.init_from, ddp.device)
        if args.decoder_only:  # the source's architecture, prior and sampler settings: the latents do not change
            cfg, vae, model = source.vae.cfg, source.vae, source
            freeze_all_but_decoder(vae)
        if source.vae.cfg != cfg or [b["name"] for b in source_card["breeds"]] != breeds:
            raise SystemExit(f"--init-from: {args.init_from} has another architecture or breed list")
        vae.load_state_dict(source.vae.state_dict())
        stages = list(source_card.get("stages", []))
    opt = make_optimizer(vae, args.lr, args.weight_decay)
    discriminator = PatchDiscriminator(args.discriminator_channels).to(ddp.device) if args.adversarial_weight else None
    disc_opt = (
        torch.optim.Adam(discriminator.parameters(), args.discriminator_lr, betas=(0.5, 0.9)) if discriminator else None
    )
    parts = {"model": vae} | ({"disc": discriminator} if discriminator else {})
    optimizers = {"opt": opt} | ({"disc_opt": disc_opt} if disc_opt else {})
    start_epoch, history = 0, []
    if args.resume:
        if not (out / RESUME_STATE).is_file():
            raise SystemExit(f"--resume: no {RESUME_STATE} in {out}; start without --resume")
        state = load_resume_state(out, parts, optimizers)
        # Compared as JSON, with the defaults of fields newer than the run; the Gaussians' form may change.
        saved, now = (json.loads(json.dumps(c.to_dict())) for c in (VAEConfig.from_dict(state["config"]), cfg))
        saved.pop("shared_covariance"), now.pop("shared_covariance")
        if saved != now or state["breeds"] != breeds:
            raise SystemExit(f"--resume: {out} was trained with another config or breed list")
        start_epoch, history, stages = state["epoch"], state["history"], state.get("stages", [])
    perceptual = load_lpips().to(ddp.device) if args.perceptual_weight else None
    objective = Stage1Objective(vae, weights, perceptual)
    wrapped = DistributedDataParallel(objective, broadcast_buffers=False) if ddp.enabled else objective

    steps_per_epoch = max(1, len(train_labels) // (args.batch_size * ddp.world))
    total_steps = steps_per_epoch * args.epochs
    card_base = {
        "breeds": [{"name": b, "photos": c} for b, c in photos.counts().items()],
        "data": {
            "roots": [str(r) for r in photos.roots],
            "layout": photos.layout,
            "photos": len(photos.photos),
            "max_per_breed": args.max_per_breed,
        },
        "split": {**asdict(recipe), "train": len(train_ids), "validation_ids": val_ids, "excluded_ids": duplicates},
        "loss_weights": weights.to_dict(),
        "stages": [*stages, stage_record("training", args)],
        "git_commit": git_commit(),
    }
    last_epoch = args.stop_after or args.epochs
    for epoch in range(start_epoch, last_epoch):
        started = time.time()
        generator = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
        order = balanced_indices(train_labels, steps_per_epoch * args.batch_size * ddp.world, generator)
        order = order[ddp.rank :: ddp.world]
        aug_gen = torch.Generator().manual_seed(args.seed * 7919 + epoch * 31 + ddp.rank)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", disable=not show_progress)
        sums = torch.zeros(6)
        extras: dict[str, float] = {}
        vae.train()
        if args.decoder_only:
            vae.encoder.eval()
            vae.breed_head.eval()
        for i in bar:
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total_steps, args.lr)
            kl_scale = min(1.0, (step + 1) / max(1, args.kl_warmup_epochs * steps_per_epoch))
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            x = augment(to_tensor(train.pixels[idx.numpy()]), aug_gen).to(ddp.device)
            y = train_labels[idx].to(ddp.device)
            playing = discriminator is not None and step >= args.adversarial_start
            terms = wrapped(x, y, kl_scale, discriminator if playing else None)
            opt.zero_grad(set_to_none=True)
            terms.loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1000.0)
            opt.step()
            if playing:  # the discriminator's own step, on this batch's photos and reconstructions
                disc_loss = hinge_discriminator_loss(discriminator(x), discriminator(terms.reconstruction))
                disc_opt.zero_grad(set_to_none=True)
                disc_loss.backward()
                disc_opt.step()
                terms.extras["discriminator"] = disc_loss.item()
            for name, value in terms.extras.items():
                if name in ("perceptual", "generator", "adaptive_weight", "discriminator"):
                    extras[name] = extras.get(name, 0.0) + value
            sums += torch.tensor(
                [
                    terms.loss.item(),
                    terms.pixel_nll.item(),
                    terms.kl.item(),
                    terms.breed_ce.item(),
                    terms.breed_correct.item() / len(y),
                    terms.extras.get("generated_breed_acc", 0.0),
                ]
            )
            if show_progress and i % 10 == 0:
                bar.set_postfix(
                    loss=f"{terms.loss.item():.0f}",
                    kl=f"{terms.kl.item():.0f}",
                    acc=f"{sums[4] / (i + 1):.2f}",
                    gen_acc=f"{sums[5] / (i + 1):.2f}",
                )
        sums = ddp.all_sum(sums) / (steps_per_epoch * ddp.world)
        names = ("loss", "pixel_nll", "kl", "breed_ce", "top1", "generated_breed_acc")
        train_metrics = {f"train_{name}": value.item() for name, value in zip(names, sums, strict=True)}
        train_metrics |= {f"train_{name}": total / steps_per_epoch for name, total in extras.items()}  # rank 0's
        if ddp.main:
            vae.eval()
            if not (args.decoder_only or args.plain):  # the plain baseline samples from N(0, I)
                vae.fit_latent_gaussians(posterior_means(vae, train.pixels, ddp.device), train_labels)
            metrics = {
                "epoch": epoch + 1,
                "step": (epoch + 1) * steps_per_epoch,
                "seconds": round(time.time() - started, 1),
                **train_metrics,
                "pixel_scale": vae.pixel_log_scale().exp().tolist(),
                **held_out_metrics(vae, weights, val.pixels, val_labels, ddp.device),
            }
            history.append({k: v for k, v in metrics.items() if k != "val_kl_per_dim"})
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            write_figures(model, breeds, val.pixels, out, epoch + 1)
            checkpoint.save(model, {**card_base, "training_metrics": history[-1], "history": history}, out)
            if not args.decoder_only:  # a decoder-only fine-tune is one process without --resume
                state = {
                    "epoch": epoch + 1,
                    "history": history,
                    "config": cfg.to_dict(),
                    "breeds": breeds,
                    "stages": stages,
                }
                save_resume_state(out, parts, optimizers, state)
            print(
                f"epoch {epoch + 1}: val PSNR {metrics['val_psnr']:.2f} dB, top-1 {metrics['val_top1']:.3f}, "
                f"KL {metrics['val_kl']:.1f} nats ({metrics['val_active_dims']} active dims), "
                f"{metrics['val_neg_elbo_bpd']:.3f} bits/dim, {metrics['seconds']:.0f}s",
                flush=True,
            )
        ddp.barrier()
        if ddp.enabled:  # rank 0 refitted the Gaussians; keep every rank's buffers identical
            for buffer in (vae.prior_mean, vae.prior_cholesky, vae.pooled_cholesky):
                dist.broadcast(buffer, src=0)
    ddp.close()
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
