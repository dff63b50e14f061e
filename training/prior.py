"""Fit the latent diffusion prior to a trained checkpoint and write a new checkpoint.

The default checkpoint's prior, its continuation and its autoguidance guide (``recipes/dogs64.toml``):

    python -m training.prior --init-from runs/dogs64/vae --data ../shared/dogs --out runs/dogs64/prior \
        --steps 4000 --channels 96 --attention --lr 2e-3
    python -m training.prior --init-from runs/dogs64/vae --prior-from runs/dogs64/prior --data ../shared/dogs \
        --out runs/dogs64/prior-more --steps 4000 --channels 96 --attention --lr 5e-4 --patience 0
    python -m training.prior --init-from runs/dogs64/vae --data ../shared/dogs --out runs/dogs64/guide \
        --steps 1000 --channels 96 --attention --lr 2e-3 --patience 0

The first stage leaves a VAE whose decoder only knows the thin set of latents that real photos occupy; per-breed
Gaussians over them sample mostly off that set. This command encodes the checkpoint's own training photos (the
card's split, so no held-out photo is seen) and their mirror images (``--no-flip``: the photos only), trains
:class:`model.diffusion.LatentDiffusion` on those latents, keeps the step whose denoising error on a slice of them it
did not train on is best (early stopping), and writes the same VAE with that diffusion prior. What is checked and
kept is an exponential moving average of the weights (``--ema``, 0.999). The sampler settings are the source's when
it has a diffusion prior (``--prior-from``: that one's), otherwise the defaults of ``model.sampler.SamplerSettings``;
``python -m training.sampling`` chooses others. One process: a step's passes in bf16 on a GPU and on a CPU that
computes it natively (``training.common.bf16_autocast``), about 75 minutes for the default on 2 CPU cores. Writes
``prior-metrics.jsonl`` (one line per ``--log-every`` steps) and ``figures/samples-prior.png`` (8 samples per breed).
Resumable (``--resume``) from its last check: every check leaves the weights, their average, the best so far and the
optimizer's moments in ``resume.safetensors``, so a run longer than a session goes on in the next one.

On a machine without the photos or the checkpoint (a lent GPU, ``docs/gpu.md``): ``--pack`` trains on the latents
``python -m training.pack`` wrote, and without ``--init-from`` writes the denoiser alone; back here, ``--init-from
CHECKPOINT --denoiser-from FOLDER`` writes the checkpoint with it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from model import checkpoint, latent_ops
from model.diffusion import DiffusionConfig, LatentDiffusion
from model.imaging import labelled_rows
from model.prior import DiffusionPrior, DogModel
from model.sampler import SamplerSettings
from training.common import (
    RESUME_STATE,
    bf16_autocast,
    command_args,
    git_commit,
    load_resume_state,
    lr_at,
    next_card,
    posterior_means,
    resolve_device,
    save_resume_state,
    set_threads,
)
from training.data import balanced_indices, find_photos, held_out_photos, limit_per_breed, load_images, training_ids
from training.losses import denoising_loss
from training.pack import encoder_digest, read_pack


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.prior", description=__doc__.split("\n")[0])
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="a checkpoint made by python -m training (left out with --pack: the denoiser alone is written)",
    )
    p.add_argument("--data", type=Path, nargs="+", default=None, help="the data folders that checkpoint was trained on")
    p.add_argument(
        "--pack", type=Path, default=None, help="train on this latent pack (python -m training.pack) instead of --data"
    )
    p.add_argument(
        "--denoiser-from",
        type=Path,
        default=None,
        help="train nothing: write --init-from's checkpoint with the denoiser a --pack run without it wrote here",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder for the new checkpoint (or denoiser)")
    p.add_argument(
        "--prior-from",
        type=Path,
        default=None,
        help="start from this checkpoint's diffusion prior (same architecture) instead of from scratch, "
        "e.g. to train a finished prior for longer with a new schedule",
    )
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--channels", type=int, default=128, help="width of the denoiser")
    p.add_argument("--blocks", type=int, default=6, help="residual blocks of the denoiser")
    p.add_argument("--attention", action="store_true", help="a self-attention layer after every second block")
    p.add_argument(
        "--patch",
        type=int,
        default=1,
        help="the denoiser sees patch x patch cells of the latent (2: a quarter the cost)",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=0.999,
        help="decay of the exponential moving average of the weights that is checked and kept (0: none)",
    )
    p.add_argument(
        "--no-flip",
        action="store_true",
        help="train on the training photos' latents only, not also on those of their mirror images",
    )
    p.add_argument("--log-every", type=int, default=250, help="steps between early-stopping checks (and log lines)")
    p.add_argument(
        "--patience",
        type=int,
        default=8,
        help="stop after this many checks without a better early-stopping error (0: run all --steps)",
    )
    p.add_argument(
        "--stop-fraction",
        type=float,
        default=0.05,
        help="share of the training latents held back to pick the step with the best denoising error",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--stop-after", type=int, default=None, help="stop at the first check at or after this step (--resume goes on)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the last check saved in --out")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache (default ~/.cache/vae-dogs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bar (logs stay)")
    args = p.parse_args(argv)
    if min(args.steps, args.batch_size, args.channels, args.blocks, args.log_every, args.patch) < 1:
        p.error("--steps, --batch-size, --channels, --blocks, --log-every and --patch must be positive")
    if args.patience < 0:
        p.error("--patience must not be negative")
    if not 0 < args.stop_fraction < 1:
        p.error("--stop-fraction must lie between 0 and 1")
    if not 0 <= args.ema < 1:
        p.error("--ema must lie in [0, 1)")
    if args.denoiser_from is not None:
        if args.init_from is None:
            p.error("--denoiser-from needs --init-from: the checkpoint the denoiser goes into")
    elif (args.data is None) == (args.pack is None):
        p.error("give the photos (--data) or a latent pack (--pack), one of them")
    elif args.init_from is None and args.pack is None:
        p.error("--init-from is needed with --data: its encoder makes the latents")
    return args


# What makes two invocations the same run: a resumed run must agree on all of these, and may change the rest
# (device, threads, patience, where it stops).
RUN_ARGS = (
    "init_from", "pack", "prior_from", "steps", "batch_size", "lr", "channels", "blocks", "attention", "patch",
    "ema", "no_flip", "log_every", "stop_fraction", "seed",
)  # fmt: skip
METRICS_FILE = "prior-metrics.jsonl"
DENOISER_CARD = "denoiser.json"
DENOISER_FORMAT = "vae-dogs-denoiser/1"
SHARD_BYTES = 15 * 2**20  # a file brought back from a lent GPU may hold at most 16 MiB


def save_denoiser(denoiser: LatentDiffusion, about: dict[str, Any], folder: Path) -> None:
    """The denoiser alone (a --pack run without a checkpoint): its weights in files of at most ``SHARD_BYTES`` and
    ``denoiser.json`` (its config, the encoder its latents came from, the stage's record)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("denoiser-*.safetensors"):
        old.unlink()
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in denoiser.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if shards[-1] and size + tensor.nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += tensor.nbytes
    for i, shard in enumerate(shards):
        save_file(shard, str(folder / f"denoiser-{i:02d}.safetensors"))
    card = {"format": DENOISER_FORMAT, "config": denoiser.cfg.to_dict(), **about}
    checkpoint.atomic_write_json(folder / DENOISER_CARD, card)


def with_new_prior(source: DogModel, denoiser: LatentDiffusion, sampling: SamplerSettings) -> DogModel:
    """``source`` with ``denoiser`` as its prior, in eval mode. A new prior drops any guide and student (both were
    made for another), so it samples with the teacher and no autoguidance."""
    sampling = replace(sampling, autoguidance=1.0, distilled=False)
    return DogModel(source.vae, DiffusionPrior(denoiser), sampling, source.identifier).eval()


def attach_denoiser(args: argparse.Namespace, device: torch.device) -> Path:
    """``--init-from``'s checkpoint with the denoiser in ``--denoiser-from`` as its prior (the guide and student
    dropped: they were made for another), written to ``--out`` with its sample figure."""
    source, card = checkpoint.load(args.init_from, device)
    card_path = args.denoiser_from / DENOISER_CARD
    if not card_path.is_file():
        raise SystemExit(f"--denoiser-from: no {DENOISER_CARD} in {args.denoiser_from}")
    about = json.loads(card_path.read_text())
    if about.get("format") != DENOISER_FORMAT or about.get("encoder") != encoder_digest(source.vae):
        raise SystemExit(f"--denoiser-from: {args.denoiser_from} was not trained on the latents of {args.init_from}")
    denoiser = LatentDiffusion(
        DiffusionConfig.from_dict(about["config"]), source.n_breeds, source.vae.cfg.latent_shape
    ).to(device)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(args.denoiser_from.glob("denoiser-*.safetensors")):
        state |= load_file(str(shard))
    denoiser.load_state_dict(state)
    model = with_new_prior(source, denoiser, source.sampling)
    checkpoint.save(model, next_card(card, about["stage"]), args.out)
    write_sample_figure(model, card, args.out)
    print(f"wrote {args.out}: {args.init_from} with the denoiser of {args.denoiser_from}", flush=True)
    return args.out


def write_sample_figure(model: DogModel, card: dict[str, Any], out: Path) -> None:
    breeds = [b["name"] for b in card["breeds"]]
    (out / "figures").mkdir(exist_ok=True)
    samples = torch.cat([latent_ops.sample(model, 8, breed=b, seed=b) for b in range(len(breeds))])
    labelled_rows(samples, breeds, columns=8).save(out / "figures" / "samples-prior.png")


def noise_seed(seed: int, step: int) -> int:
    """The seed of the diffusion times and noise from ``step`` on: reset after every check (which seeds its own),
    so that a resumed run draws what the uninterrupted one would have."""
    return seed * 1_000_003 + step


def split_latents(
    model: DogModel,
    card: dict[str, Any],
    data: list[Path],
    cache_dir: Path | None,
    device: torch.device,
    mirrored: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Posterior means and breed indices of the checkpoint's training and held-out photos, and (``mirrored``)
    the posterior means of the training photos' mirror images, row for row."""
    breeds = [b["name"] for b in card["breeds"]]
    photos = limit_per_breed(find_photos(data), (card.get("data") or {}).get("max_per_breed"))
    if photos.breeds != breeds:
        raise SystemExit(f"{data} has breeds {photos.breeds}, but the checkpoint was trained on {breeds}")
    images = load_images(photos, model.vae.cfg.image_size, cache_dir)
    val = held_out_photos(card, images, data)
    train = images.select(training_ids(card, images))
    index = {b: i for i, b in enumerate(breeds)}
    vae = model.vae
    return (
        posterior_means(vae, train.pixels, device),
        torch.tensor([index[b] for b in train.breeds]),
        posterior_means(vae, val.pixels, device),
        torch.tensor([index[b] for b in val.breeds]),
        posterior_means(vae, train.pixels[:, :, ::-1], device) if mirrored else None,
    )


class WeightAverage:
    """Exponential moving average of a module's parameters (buffers copied), the weights diffusion models
    are usually sampled with: the raw weights at the end of a step are noisier than their recent average."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))  # short warm-up: early weights fade fast
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].lerp_(v.detach(), 1 - decay)
            else:
                self.state[k].copy_(v)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    if args.denoiser_from is not None:
        return attach_denoiser(args, device)
    source, card = checkpoint.load(args.init_from, device) if args.init_from else (None, {})
    pack = read_pack(args.pack) if args.pack else None
    if source is not None and not source.vae.cfg.breed_embed_dim:
        raise SystemExit(
            f"{args.init_from} is a plain VAE (--plain); a learned prior is for the breed-conditional model"
        )
    if source is not None and pack is not None and pack.encoder != encoder_digest(source.vae):
        raise SystemExit(f"--pack: {args.pack} holds the latents of another encoder than {args.init_from}'s")
    n_breeds = source.n_breeds if source is not None else len(pack.breeds)
    sampling = source.sampling if source is not None else SamplerSettings()
    torch.manual_seed(args.seed)
    denoiser = LatentDiffusion(
        DiffusionConfig(args.channels, args.blocks, args.attention, args.patch),
        n_breeds,
        source.vae.cfg.latent_shape if source is not None else pack.latent_shape,
    ).to(device)
    if args.prior_from:
        other, _ = checkpoint.load(args.prior_from, device)
        if not isinstance(other.prior, DiffusionPrior) or other.prior.denoiser.cfg != denoiser.cfg:
            raise SystemExit(f"--prior-from: {args.prior_from} has no diffusion prior of this architecture")
        denoiser.load_state_dict(other.prior.denoiser.state_dict())
        sampling = other.sampling
    # Without a checkpoint (a lent GPU with a pack) there is no model to write: the denoiser alone is.
    model = with_new_prior(source, denoiser, sampling) if source else None

    if pack is not None:
        train_z, train_y, val_z, val_y = pack.train_z, pack.train_y, pack.val_z, pack.val_y
        mirrored_z = None if args.no_flip else pack.mirrored_z
    else:
        with torch.no_grad():
            train_z, train_y, val_z, val_y, mirrored_z = split_latents(
                model, card, args.data, args.cache_dir, device, not args.no_flip
            )
    # Early stopping: the prior overfits the latents within a few thousand steps. A slice of the *training*
    # latents picks the step, so the checkpoint's held-out photos stay unseen until evaluation.
    generator = torch.Generator().manual_seed(args.seed)
    shuffled = torch.randperm(len(train_z), generator=generator)
    n_stop = max(1, int(args.stop_fraction * len(train_z)))
    stop_z, stop_y = train_z[shuffled[:n_stop]], train_y[shuffled[:n_stop]]
    train_z, train_y = train_z[shuffled[n_stop:]], train_y[shuffled[n_stop:]]
    if mirrored_z is not None:  # a mirrored dog is as much a dog of its breed; twice the latents to fit
        train_z, train_y = torch.cat([train_z, mirrored_z[shuffled[n_stop:]]]), torch.cat([train_y, train_y])
    train_z = train_z.to(device)  # all of it on a GPU: no copy a step
    train_w = F.one_hot(train_y, n_breeds).float().to(device)
    if not args.prior_from:  # a prior carried on keeps the standardisation its weights were trained with
        denoiser.fit_standardisation(train_z)
    n_params = sum(p.numel() for p in denoiser.parameters())
    print(
        f"{len(train_z)} training / {n_stop} early-stopping / {len(val_z)} held-out latents of "
        f"{args.pack or args.init_from}; "
        f"prior: {n_params:,} parameters on {device}",
        flush=True,
    )
    checks = {
        "stop": (stop_z.to(device), F.one_hot(stop_y, n_breeds).float().to(device)),
        "val": (val_z.to(device), F.one_hot(val_y, n_breeds).float().to(device)),
    }
    order = balanced_indices(train_y, args.steps * args.batch_size, generator)  # every breed equally often
    best: tuple[float, int, dict[str, torch.Tensor]] = (float("inf"), 0, {})
    history: list[dict[str, Any]] = []
    stage = {"command": "training.prior", "args": command_args(args), "git_commit": git_commit()}

    def save(best_step: int) -> None:
        """Write the checkpoint (or the denoiser) with the best averaged weights so far; training goes on from its
        own."""
        own = {k: v.detach().clone() for k, v in denoiser.state_dict().items()}
        denoiser.load_state_dict(best[2])
        record = stage | {"best_step": best_step, "history": history}
        if model is None:
            save_denoiser(denoiser, {"encoder": pack.encoder, "stage": record}, args.out)
        else:
            checkpoint.save(model, next_card(card, record), args.out)
        denoiser.load_state_dict(own)

    checks_since_best, first_step = 0, 0
    opt = torch.optim.Adam(denoiser.parameters(), lr=args.lr)
    average = WeightAverage(denoiser, args.ema) if args.ema else None
    args.out.mkdir(parents=True, exist_ok=True)
    run_args = {k: v for k, v in command_args(args).items() if k in RUN_ARGS}
    if args.resume:
        if not (args.out / RESUME_STATE).is_file():
            raise SystemExit(f"--resume: no {RESUME_STATE} in {args.out}; start without --resume")
        averaged, kept = copy.deepcopy(denoiser), copy.deepcopy(denoiser)
        parts = {"denoiser": denoiser, "best": kept} | ({"average": averaged} if average else {})
        resumed = load_resume_state(args.out, parts, {"opt": opt})
        if resumed.get("run_args") != run_args:
            raise SystemExit(f"--resume: {args.out} holds another run ({resumed.get('run_args')})")
        first_step, history, checks_since_best = resumed["step"], resumed["history"], resumed["checks_since_best"]
        best = (resumed["best_error"], resumed["best_step"], {k: v.clone() for k, v in kept.state_dict().items()})
        if average:
            average.state = {k: v.clone() for k, v in averaged.state_dict().items()}
            average.updates = resumed["average_updates"]
        print(f"resumed at step {first_step} (best so far: step {best[1]})", flush=True)
    elif (args.out / METRICS_FILE).exists():
        (args.out / METRICS_FILE).unlink()

    def save_resume(step: int) -> None:
        kept, averaged = copy.deepcopy(denoiser), copy.deepcopy(denoiser)
        kept.load_state_dict(best[2])
        parts = {"denoiser": denoiser, "best": kept}
        if average:
            averaged.load_state_dict(average.state)
            parts["average"] = averaged
        counters = {"step": step, "history": history, "checks_since_best": checks_since_best, "run_args": run_args}
        counters |= {"best_error": best[0], "best_step": best[1], "average_updates": average.updates if average else 0}
        save_resume_state(args.out, parts, {"opt": opt}, counters)

    started, running, since_log = time.time(), 0.0, 0
    earlier_seconds = history[-1]["seconds"] if history else 0.0  # a resumed run's clock goes on
    denoiser.train()
    torch.manual_seed(noise_seed(args.seed, first_step))
    bar = tqdm(range(first_step, args.steps), desc="latent prior", disable=args.no_progress, initial=first_step)
    bar.total = args.steps
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=200)
        idx = order[step * args.batch_size : (step + 1) * args.batch_size]
        with bf16_autocast(device):
            loss, _ = denoising_loss(denoiser, train_z[idx].to(device), train_w[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if average:
            average.update(denoiser)
        running, since_log = running + loss.item(), since_log + 1
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            entry: dict[str, Any] = {
                "step": step + 1,
                "seconds": round(earlier_seconds + time.time() - started, 1),
                "train_denoising_mse": running / since_log,
            }
            if average:  # the checks score the averaged weights (those that are kept)
                trained = {k: v.detach().clone() for k, v in denoiser.state_dict().items()}
                denoiser.load_state_dict(average.state)
            denoiser.eval()
            with torch.no_grad():
                for name, (z, w) in checks.items():
                    torch.manual_seed(1234)  # the same diffusion times and noise at every check
                    entry[f"{name}_denoising_mse"] = denoising_loss(denoiser, z, w)[0].item()
            if average:
                denoiser.load_state_dict(trained)
            denoiser.train()
            torch.manual_seed(noise_seed(args.seed, step + 1))
            if entry["stop_denoising_mse"] < best[0]:
                kept = average.state if average else denoiser.state_dict()
                best = (entry["stop_denoising_mse"], step + 1, {k: v.detach().clone() for k, v in kept.items()})
                checks_since_best = 0
            else:
                checks_since_best += 1
            running, since_log = 0.0, 0
            history.append(entry)
            with open(args.out / METRICS_FILE, "a") as f:
                f.write(json.dumps(entry) + "\n")
            if checks_since_best == 0:  # a run stopped early (or killed) leaves its best checkpoint so far
                save(best[1])
            save_resume(step + 1)
            bar.set_postfix(stop=f"{entry['stop_denoising_mse']:.4g}", best_step=best[1])
            if args.stop_after and step + 1 >= args.stop_after and step + 1 < args.steps:
                print(f"stopped at step {step + 1} (--stop-after); --resume goes on", flush=True)
                return args.out
            if args.patience and checks_since_best >= args.patience:
                print(
                    f"stopped at step {step + 1}: no better early-stopping error for {args.patience} checks", flush=True
                )
                break
    save(best[1])
    denoiser.load_state_dict(best[2])
    if model is not None:
        model.eval()
        write_sample_figure(model, card, args.out)
    kept = next(e for e in history if e["step"] == best[1])
    print(
        f"wrote {args.out}: kept step {best[1]} of {history[-1]['step']}, denoising error of the held-out photos' "
        f"latents {kept['val_denoising_mse']:.4g}, {history[-1]['seconds']:.0f}s",
        flush=True,
    )
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
