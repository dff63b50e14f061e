"""Train the breed-conditional VAE on dog photos and write a checkpoint.

Single process (CPU or one GPU); the default checkpoint's stage 1, with a spatial latent of 8 channels at 8x8:

    python -m training --data ../shared/dogs --out runs/spatial64 --epochs 16 --channels 32,64,128 --latent-channels 8

Several processes with DistributedDataParallel (gloo on CPU, nccl on GPU):

    torchrun --standalone --nproc_per_node=4 -m training --data ../shared/dogs --out runs/dogs64

Resume a stopped run from its last finished epoch (same --out):

    python -m training --data ../shared/dogs --out runs/dogs64 --epochs 40 --resume

Stage 2, the adversarial decoder (encoder, breed head and latent priors stay fixed; one process; a checkpoint with
a learned prior keeps it, and the discriminator judges decodes of ``--prior-bank`` latents drawn from it per breed):

    python -m training --data ../shared/dogs --out runs/dogs64-adv --init-from runs/dogs64 --adversarial --epochs 6 --lr 2e-4

More epochs for the decoder alone (the same loss as stage 1; encoder, breed head and latent priors stay fixed, so the
latents, the checkpoint's prior and its guide stay valid; one process), the default checkpoint's last step:

    python -m training --data ../shared/dogs --out runs/dogs64-dec8 --init-from runs/dogs64-os --decoder-only --epochs 8 --lr 3e-4

The latent prior that the default checkpoint samples from (a diffusion model on the latents) is fitted
afterwards by its own command (``training/prior.py``):

    python -m training.prior --kind diffusion --init-from runs/spatial64 --data ../shared/dogs --out runs/diff96a \
        --steps 4000 --diffusion-channels 96 --attention --lr 2e-3 --sampling-steps 8
    python -m training.prior --kind diffusion --init-from runs/diff96a --prior-from runs/diff96a --data ../shared/dogs \
        --out runs/diff96b --steps 4000 --diffusion-channels 96 --attention --lr 5e-4 --sampling-steps 8 --patience 0

(the second command trains the first one's prior 4,000 steps more: that is the default checkpoint's prior;
``python -m training.sampling`` then chose the guidance scale and DDIM eta it samples with)

The plain-VAE baseline of issue 7 (no breed input to the decoder, fixed pixel scale, samples from N(0, I)):

    python -m training --data ../shared/dogs --out runs/plain64 --plain --epochs 10

Each epoch writes ``metrics.jsonl`` (one JSON line), ``figures/samples-epochNNN.png`` (prior samples,
one row per breed) and ``figures/reconstructions-epochNNN.png`` (held-out photos above their
reconstructions; that figure shows real photos, so keep it out of anything you publish), and the
checkpoint (``model.safetensors`` + ``card.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model import checkpoint, latent_ops
from model.imaging import grid, labelled_rows
from model.vae import BreedVAE, Discriminator, VAEConfig
from training.evaluate import held_out_metrics
from training.data import (
    SplitRecipe,
    augment,
    balanced_indices,
    differentiable_augment,
    find_photos,
    limit_per_breed,
    load_images,
    split_ids,
    to_tensor,
)

RESUME_WEIGHTS = "resume.safetensors"
RESUME_STATE = "resume.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="data folder (Kaggle, Stanford Dogs or images/<breed>/ layout)")
    p.add_argument("--out", required=True, help="output folder for the checkpoint, metrics and figures")
    p.add_argument("--resolution", type=int, default=64, choices=(64, 128))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--latent-dim", type=int, default=128, help="size of a vector latent (ignored with --latent-channels)")
    p.add_argument("--latent-channels", type=int, default=0,
                   help="C > 0: a spatial latent of C channels at the encoder's last resolution "
                        "(latent_dim = C * side^2, e.g. 8 channels at 8x8 with --channels 32,64,128)")
    p.add_argument("--channels", type=str, default="32,64,128,256", help="VAE widths per stride-2 stage")
    p.add_argument("--classifier-channels", type=str, default="32,64,128,256")
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--kl-warmup-epochs", type=float, default=3.0)
    p.add_argument("--generated-breed-weight", type=float, default=3.0)
    p.add_argument("--adversarial", action="store_true",
                   help="adversarial stage: fine-tune the decoder of --init-from against a projection discriminator "
                        "(encoder, breed head and ex-post prior frozen)")
    p.add_argument("--decoder-only", action="store_true",
                   help="fine-tune only the decoder (with the breed embeddings and pixel scale) of --init-from on stage 1's "
                        "loss (its weights: --generated-breed-weight); the encoder, breed head and latent priors stay fixed, "
                        "so its latents and prior stay valid")
    p.add_argument("--adversarial-weight", type=float, default=0.5,
                   help="adversarial gradient norm relative to the reconstruction's at the decoder's last layer")
    p.add_argument("--discriminator-lr", type=float, default=2e-4)
    p.add_argument("--prior-bank", type=int, default=128,
                   help="adversarial stage of a checkpoint with a learned latent prior: latents drawn from it per breed "
                        "once at the start, whose decodes the discriminator judges (0: the ex-post Gaussians instead)")
    p.add_argument("--r1", type=float, default=1.0,
                   help="R1 gradient penalty weight on real photos (Mescheder et al. 2018); 0 turns it off")
    p.add_argument("--no-diff-augment", action="store_true",
                   help="show the discriminator raw images instead of DiffAugment's colour/translation/cutout")
    p.add_argument("--keep-epoch-checkpoints", action="store_true",
                   help="also keep every epoch's checkpoint under <out>/epochs/NNN (to pick an adversarial epoch by FID)")
    p.add_argument("--plain", action="store_true",
                   help="the plain-VAE baseline of issue 7: decoder without breed input, fixed pixel scale, "
                        "no generated-breed term, samples from N(0, I)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--max-per-breed", type=int, default=None, help="use at most this many photos per breed")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache (default ~/.cache/vae-dogs)")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch saved in --out")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from this checkpoint's weights (fine-tuning; loss weights may differ, architecture may not)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--no-progress", action="store_true", help="hide tqdm bars (logs stay)")
    args = p.parse_args(argv)
    if min(args.epochs, args.batch_size, args.latent_dim) < 1 or args.latent_channels < 0:
        p.error("--epochs, --batch-size and --latent-dim must be positive, --latent-channels must not be negative")
    non_negative = ("lr", "weight_decay", "beta", "kl_warmup_epochs", "generated_breed_weight", "adversarial_weight",
                    "discriminator_lr", "prior_bank", "r1")
    bad = [f"--{name.replace('_', '-')}" for name in non_negative if not getattr(args, name) >= 0]  # also catches NaN
    if bad:
        p.error(f"{', '.join(bad)}: must be a number that is not negative")
    if args.decoder_only and args.adversarial:
        p.error("--decoder-only and --adversarial are two different fine-tunings of the decoder: give one")
    if not 0 < args.validation_fraction < 1:
        p.error("--validation-fraction must lie strictly between 0 and 1")
    if args.max_per_breed is not None and args.max_per_breed < 2:
        p.error("--max-per-breed must be at least 2 (one photo to train on, one held out)")
    for flag in ("channels", "classifier_channels"):
        try:
            widths = _ints(getattr(args, flag))
        except ValueError:
            widths = ()
        if not widths or min(widths) < 1:
            p.error(f"--{flag.replace('_', '-')} must be a comma-separated list of positive integers, e.g. 32,64,128")
    return args


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
        commit = out.stdout.strip()
        return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None
    except (OSError, subprocess.SubprocessError):
        return None


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(",") if c.strip())


def resolve_device(device_arg: str) -> torch.device:
    """``auto`` -> cuda when there is a GPU, else cpu; anything else as given."""
    if device_arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device_arg)


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


def lr_at(step: int, total: int, base: float, warmup: int = 300) -> float:
    """Linear warm-up then cosine decay to 10 % of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: BreedVAE, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and name != "breed_embeddings" else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def save_resume_state(out: Path, model: BreedVAE, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Optimizer moments as safetensors and the counters as JSON: resuming needs no pickle either."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for pid, slots in opt_state["state"].items():
        for slot, value in slots.items():
            tensors[f"opt.{pid}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tmp = out / f".{RESUME_WEIGHTS}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, out / RESUME_WEIGHTS)
    checkpoint.atomic_write_json(out / RESUME_STATE, state)


def load_resume_state(out: Path, model: BreedVAE, opt: torch.optim.Optimizer) -> dict[str, Any]:
    state = json.loads((out / RESUME_STATE).read_text())
    tensors = load_file(str(out / RESUME_WEIGHTS))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state = opt.state_dict()
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, slot = key.split(".", 2)
            opt_state["state"].setdefault(int(pid), {})[slot] = value
    opt.load_state_dict(opt_state)
    return state


@torch.no_grad()
def posterior_means(model: BreedVAE, images: torch.Tensor, device: torch.device, batch: int = 512) -> torch.Tensor:
    means = [model.encode(to_tensor(images[i : i + batch]).to(device))[0].cpu() for i in range(0, len(images), batch)]
    return torch.cat(means)


def write_figures(model: BreedVAE, breeds: list[str], val_pixels: np.ndarray, out: Path, epoch: int) -> None:
    model.eval()
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    per_breed = 8
    samples = torch.cat([latent_ops.sample(model, per_breed, breed=b, seed=epoch * 1000 + b) for b in range(len(breeds))])
    labelled_rows(samples, breeds, columns=per_breed).save(figures / f"samples-epoch{epoch:03d}.png")
    originals = to_tensor(val_pixels[:: max(1, len(val_pixels) // 16)][:16])
    recon = latent_ops.reconstruct(model, originals)
    grid(torch.cat([originals, recon]), columns=16).save(figures / f"reconstructions-epoch{epoch:03d}.png")
    model.train()


def freeze_all_but_decoder(model: BreedVAE) -> None:
    """Freeze what defines z and the breed (encoder, breed head) and what was fitted to z (latent priors, guide,
    discriminator), for the stages that train the decoder alone: the checkpoint's latents and prior stay valid."""
    for module in (model.encoder, model.breed_head, model.latent_prior, model.guide_prior, model.latent_discriminator):
        if module is not None:
            module.requires_grad_(False)


def frozen_parts_to_eval(model: BreedVAE) -> None:
    """No dropout or statistics drift in the frozen parts that define z and the breed."""
    model.encoder.eval()
    model.breed_head.eval()


class AdversarialStage:
    """Decoder fine-tuning against a projection discriminator (see ``BreedVAE.adversarial_loss``).

    The encoder, breed head and pixel scale are frozen; the decoder and the breed embeddings learn with
    Adam(0.5, 0.9), the usual GAN setting, and the discriminator takes one hinge-loss step per decoder step.
    The discriminator sees every image through DiffAugment (both players' steps) and is regularised by a
    lazy R1 penalty on real photos, the two remedies for the mesh artefacts of the first adversarial run.
    """

    R1_EVERY = 4  # lazy regularisation (StyleGAN2): the penalty every 4th step, scaled by 4

    def __init__(self, model: BreedVAE, pixels: np.ndarray, labels: torch.Tensor, args: argparse.Namespace,
                 device: torch.device) -> None:
        self.model, self.pixels, self.labels, self.args, self.device = model, pixels, labels, args, device
        freeze_all_but_decoder(model)
        model.log_pixel_scale.requires_grad_(False)
        self.prior_bank = self.draw_prior_bank(model, args.prior_bank, args.seed, not args.no_progress) if model.latent_prior else None
        self.bank_gen = torch.Generator().manual_seed(args.seed * 7919 + 2)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(trainable, lr=args.lr, betas=(0.5, 0.9))
        self.discriminator = Discriminator(model.cfg.n_breeds).to(device)
        self.disc_opt = torch.optim.Adam(self.discriminator.parameters(), lr=args.discriminator_lr, betas=(0.5, 0.9))
        self.aug_gen = torch.Generator().manual_seed(args.seed * 7919)
        self.disc_aug_gen = torch.Generator().manual_seed(args.seed * 7919 + 1)

    @staticmethod
    def draw_prior_bank(model: BreedVAE, per_breed: int, seed: int, progress: bool = True) -> torch.Tensor | None:
        """(n_breeds, per_breed, latent_dim) latents from the checkpoint's learned prior: what it will decode
        when serving. Drawn once, because a diffusion prior's sampling costs more than a decoder step, and
        the decoder should learn to render those latents, not the ex-post Gaussians' (soup on a spatial latent)."""
        if per_breed < 1:
            return None
        model.eval()
        bank = torch.stack([latent_ops.sample_latents(model, per_breed, breed=b, seed=seed * 1000 + b)[0]
                            for b in tqdm(range(model.cfg.n_breeds), desc="prior latents", leave=False, disable=not progress)])
        model.train()
        return bank.to(next(model.parameters()).device)

    def prior_latents(self, breeds: torch.Tensor) -> torch.Tensor | None:
        if self.prior_bank is None:
            return None
        pick = torch.randint(0, self.prior_bank.shape[1], (len(breeds),), generator=self.bank_gen)
        return self.prior_bank[breeds.cpu(), pick]

    def view(self, images: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees of an image batch: DiffAugment unless --no-diff-augment."""
        return images if self.args.no_diff_augment else differentiable_augment(images, self.disc_aug_gen)

    def critic(self, images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.discriminator(self.view(images), weights)

    def epoch(self, bar: Any, order: torch.Tensor, first_step: int, total_steps: int) -> dict[str, float]:
        model, disc, args = self.model, self.discriminator, self.args
        model.train()
        frozen_parts_to_eval(model)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for i in bar:
            for group in self.opt.param_groups:
                group["lr"] = lr_at(first_step + i, total_steps, args.lr, warmup=100)
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            x = augment(to_tensor(self.pixels[idx.numpy()]), self.aug_gen).to(self.device)
            y = self.labels[idx].to(self.device)
            disc.requires_grad_(False)
            half = len(y) // 2
            loss, generated, logs = model.adversarial_loss(x, y, self.critic, args.adversarial_weight,
                                                           self.prior_latents(y[half:]))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            disc.requires_grad_(True)
            weights = torch.nn.functional.one_hot(y, model.cfg.n_breeds).float()
            real = self.view(x).detach().requires_grad_(args.r1 > 0 and i % self.R1_EVERY == 0)
            real_score = disc(real, weights)
            fake_score = self.critic(generated, weights)
            disc_loss = torch.relu(1 - real_score).mean() + torch.relu(1 + fake_score).mean()
            if real.requires_grad:
                grad, = torch.autograd.grad(real_score.sum(), real, create_graph=True)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                disc_loss = disc_loss + 0.5 * args.r1 * self.R1_EVERY * r1
                logs["r1"] = r1.item()
            self.disc_opt.zero_grad(set_to_none=True)
            disc_loss.backward()
            self.disc_opt.step()
            logs |= {"disc_loss": disc_loss.item(), "real_score": real_score.mean().item(),
                     "fake_score": fake_score.mean().item()}
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            if i % 10 == 0:
                bar.set_postfix(rec=f"{sums['rec_loss'] / (i + 1):.3f}", d=f"{sums['disc_loss'] / (i + 1):.2f}",
                                bal=f"{logs['balance']:.2f}")
        return {f"adv_{k}": v / counts[k] for k, v in sums.items()}


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
    breeds = photos.breeds
    breed_index = {b: i for i, b in enumerate(breeds)}
    recipe = SplitRecipe(seed=args.seed, validation_fraction=args.validation_fraction)
    train_ids, val_ids = split_ids(photos, recipe)
    # Rank 0 fills the cache; the others wait and then read it.
    if ddp.main:
        images = load_images(photos, args.resolution, args.cache_dir)
    ddp.barrier()
    if not ddp.main:
        images = load_images(photos, args.resolution, args.cache_dir)
    train, val = images.select(train_ids), images.select(val_ids)
    train_labels = torch.tensor([breed_index[b] for b in train.breeds])
    val_labels = torch.tensor([breed_index[b] for b in val.breeds])
    if ddp.main:
        print(
            f"{photos.layout} layout: {len(photos.photos)} photos, {len(breeds)} breeds; "
            f"{len(train_ids)} train / {len(val_ids)} held out; device {ddp.device}, {ddp.world} process(es)",
            flush=True,
        )

    channels = _ints(args.channels)
    latent_side = args.resolution // 2 ** len(channels)
    cfg = VAEConfig(
        n_breeds=len(breeds),
        image_size=args.resolution,
        latent_dim=args.latent_channels * latent_side ** 2 if args.latent_channels else args.latent_dim,
        latent_channels=args.latent_channels,
        channels=channels,
        classifier_channels=_ints(args.classifier_channels),
        beta=args.beta,
        generated_breed_weight=0.0 if args.plain else args.generated_breed_weight,
        **(dict(breed_embed_dim=0, learned_pixel_scale=False, latent_prior="standard") if args.plain else {}),
    )
    keeps_latents = args.adversarial or args.decoder_only  # decoder-only stages: z, its prior and the ex-post Gaussians stay
    source = None
    if args.init_from and not args.resume:
        source, source_card = checkpoint.load(args.init_from)
        if keeps_latents:  # the decoder of that checkpoint, whatever its latent prior (kept as it is)
            # --decoder-only trains on stage 1's loss, so its weights come from the command line as for any --init-from
            cfg = replace(source.cfg, beta=args.beta, generated_breed_weight=args.generated_breed_weight) if args.decoder_only else source.cfg
        if source.cfg.to_dict() | {"beta": 0, "breed_weight": 0, "generated_breed_weight": 0} != cfg.to_dict() | {
            "beta": 0, "breed_weight": 0, "generated_breed_weight": 0
        } or [b["name"] for b in source_card["breeds"]] != breeds:
            raise SystemExit(f"--init-from: {args.init_from} has another architecture or breed list")
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model = BreedVAE(cfg).to(ddp.device)
    if args.decoder_only:
        if not args.init_from or ddp.enabled or args.resume:
            raise SystemExit("--decoder-only fine-tunes a trained checkpoint in one process: give --init-from, not torchrun or --resume")
        freeze_all_but_decoder(model)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    start_epoch, history = 0, []
    if source is not None:
        model.load_state_dict(source.state_dict())
    if args.resume:
        if not (out / RESUME_STATE).is_file():
            raise SystemExit(f"--resume: no {RESUME_STATE} in {out}; start without --resume")
        state = load_resume_state(out, model, opt)
        if state["config"] != json.loads(json.dumps(cfg.to_dict())) or state["breeds"] != breeds:
            raise SystemExit(f"--resume: {out} was trained with another config or breed list")
        start_epoch, history = state["epoch"], state["history"]
    wrapped = DistributedDataParallel(model, broadcast_buffers=False) if ddp.enabled else model
    adversarial = None
    if args.adversarial:
        if not args.init_from or ddp.enabled or args.resume:
            raise SystemExit("--adversarial fine-tunes a trained checkpoint in one process: give --init-from, not torchrun or --resume")
        adversarial = AdversarialStage(model, train.pixels, train_labels, args, ddp.device)

    steps_per_epoch = max(1, len(train_labels) // (args.batch_size * ddp.world))
    total_steps = steps_per_epoch * args.epochs
    card_base = {
        "breeds": [{"name": b, "photos": c} for b, c in photos.counts().items()],
        "data": {"layout": photos.layout, "photos": len(photos.photos), "max_per_breed": args.max_per_breed},
        "split": {**asdict(recipe), "train": len(train_ids), "validation_ids": val_ids},
        "training": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "git_commit": git_commit(),
    }
    if args.init_from:  # how the starting weights were made, so the lineage stays reproducible
        source_card = checkpoint.read_card(args.init_from)
        card_base["init_from_card"] = {k: source_card.get(k) for k in ("training", "git_commit", "init_from_card")}
        if keeps_latents and "latent_prior_training" in source_card:
            # the prior is kept, so is how it was made and the sampling setting chosen for it
            card_base |= {k: source_card[k] for k in ("latent_prior_training", "sampling_selection", "earlier_sampling_selections")
                          if k in source_card}
    for epoch in range(start_epoch, args.epochs):
        started = time.time()
        generator = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
        order = balanced_indices(train_labels, steps_per_epoch * args.batch_size * ddp.world, generator)
        order = order[ddp.rank :: ddp.world]
        aug_gen = torch.Generator().manual_seed(args.seed * 7919 + epoch * 31 + ddp.rank)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", disable=not show_progress)
        if adversarial is not None:
            train_metrics = adversarial.epoch(bar, order, epoch * steps_per_epoch, total_steps)
        else:
            sums = torch.zeros(6)
            if args.decoder_only:
                frozen_parts_to_eval(model)
            for i in bar:
                step = epoch * steps_per_epoch + i
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total_steps, args.lr)
                kl_scale = min(1.0, (step + 1) / max(1, args.kl_warmup_epochs * steps_per_epoch))
                idx = order[i * args.batch_size : (i + 1) * args.batch_size]
                x = augment(to_tensor(train.pixels[idx.numpy()]), aug_gen).to(ddp.device)
                y = train_labels[idx].to(ddp.device)
                terms = wrapped(x, y, kl_scale)
                opt.zero_grad(set_to_none=True)
                terms.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1000.0)
                opt.step()
                sums += torch.tensor([
                    terms.loss.item(), terms.pixel_nll.item(), terms.kl.item(), terms.breed_ce.item(),
                    terms.breed_correct.item() / len(y), terms.extras.get("generated_breed_acc", 0.0),
                ])
                if show_progress and i % 10 == 0:
                    bar.set_postfix(loss=f"{terms.loss.item():.0f}", kl=f"{terms.kl.item():.0f}",
                                    acc=f"{sums[4] / (i + 1):.2f}", gen_acc=f"{sums[5] / (i + 1):.2f}")
            sums = ddp.all_sum(sums) / (steps_per_epoch * ddp.world)
            train_metrics = {
                "train_loss": sums[0].item(),
                "train_pixel_nll": sums[1].item(),
                "train_kl": sums[2].item(),
                "train_breed_ce": sums[3].item(),
                "train_top1": sums[4].item(),
                "train_generated_breed_acc": sums[5].item(),
            }
        if ddp.main:
            model.eval()
            if not keeps_latents:
                model.fit_latent_prior(posterior_means(model, train.pixels, ddp.device), train_labels)
            metrics = {
                "epoch": epoch + 1,
                "step": (epoch + 1) * steps_per_epoch,
                "seconds": round(time.time() - started, 1),
                **train_metrics,
                "pixel_scale": model.pixel_log_scale().exp().tolist(),
                **held_out_metrics(model, val.pixels, val_labels, ddp.device),
            }
            history.append({k: v for k, v in metrics.items() if k != "val_kl_per_dim"})
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            write_figures(model, breeds, val.pixels, out, epoch + 1)
            checkpoint.save(model, {**card_base, "training_metrics": history[-1], "history": history}, out)
            if args.keep_epoch_checkpoints:
                checkpoint.save(model, {**card_base, "training_metrics": history[-1], "history": history},
                                out / "epochs" / f"{epoch + 1:03d}")
            if not keeps_latents:  # those stages are one-process fine-tunes without --resume
                save_resume_state(out, model, opt, {"epoch": epoch + 1, "history": history,
                                                    "config": cfg.to_dict(), "breeds": breeds})
            print(
                f"epoch {epoch + 1}: val PSNR {metrics['val_psnr']:.2f} dB, top-1 {metrics['val_top1']:.3f}, "
                f"KL {metrics['val_kl']:.1f} nats ({metrics['val_active_dims']} active dims), "
                f"{metrics['val_neg_elbo_bpd']:.3f} bits/dim, {metrics['seconds']:.0f}s",
                flush=True,
            )
            model.train()
        ddp.barrier()
        if ddp.enabled:  # rank 0 refitted the ex-post prior; keep every rank's buffers identical
            for buffer in (model.prior_mean, model.prior_cholesky, model.pooled_cholesky):
                dist.broadcast(buffer, src=0)
    ddp.close()
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
