"""Train a discriminator of noisy latents for discriminator guidance and write it into a copy of the checkpoint.

    python -m training.discriminator checkpoints/dogs64 --data ../shared/dogs --out runs/dogs64-dg
    python -m training.sampling runs/dogs64-dg --data ../shared/dogs --out runs/dogs64-dg-chosen --discriminator-guidance 0.5,1,2

Discriminator guidance (Kim et al. 2023): the diffusion prior's sampler, at the checkpoint's own sampling settings,
draws ``--fake-latents`` latents balanced over the breeds; a small time- and breed-conditional classifier
(:class:`model.vae.LatentDiscriminator`) learns to tell them from the posterior means of the checkpoint's training photos
(and of their mirror images: the latents the prior was trained on; never a held-out photo), both noised by the diffusion's
forward process at a random time. Real latents are drawn equally often from every breed, as the fakes are, so what it
learns is "real or sampled", not "which breed is common". Its logit then estimates log p_real(x_t | y) - log p_sampler(x_t | y),
and the sampler adds the logit's gradient, with a weight, to the denoiser's score (``diffusion_discriminator_guidance``).

The step whose cross-entropy on a slice of both sets it did not train on (``--stop-fraction``) is lowest is kept. The
copy's weights are the source's plus the discriminator's; its guidance weight is 0 (unused), so it samples exactly as
the source until ``python -m training.sampling --discriminator-guidance`` chooses a weight by FID against training
photos. Writes ``discriminator-metrics.jsonl`` (one line per ``--log-every`` steps: training and early-stopping
cross-entropy, and the early-stopping accuracy, real and sampled latents weighed equally, in four bands of diffusion
time: how far apart the sampler's latents and the real ones are at each noise level). One process; about 25 minutes
on 2 CPU cores with the defaults (5 of them sampling the fakes); on a GPU when there is one (``--device``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import checkpoint
from model.vae import BreedVAE, LatentDiffusion, LatentDiscriminator
from training.data import balanced_indices
from training.evaluate import balanced_latents
from training.prior import split_latents
from training.train import git_commit, lr_at, resolve_device

# Bands of diffusion time the early-stopping accuracy is reported in (t = 1 is pure noise: 50 % is all there is).
TIME_BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.discriminator", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="a checkpoint with a diffusion prior (python -m training.prior --kind diffusion)")
    p.add_argument("--data", type=Path, required=True, help="the data folder the checkpoint was trained on")
    p.add_argument("--out", type=Path, required=True, help="output folder for the checkpoint with the discriminator")
    p.add_argument("--fake-latents", type=int, default=8192, help="latents drawn from the checkpoint's sampler to train on")
    p.add_argument("--channels", type=int, default=64, help="width of the discriminator")
    p.add_argument("--blocks", type=int, default=4, help="its residual blocks")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256, help="real latents per step (as many sampled ones)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--log-every", type=int, default=200, help="steps between early-stopping checks (and log lines)")
    p.add_argument("--patience", type=int, default=5, help="stop after this many checks without a better one (0: never)")
    p.add_argument("--stop-fraction", type=float, default=0.05,
                   help="share of the real and of the sampled latents held back to pick the step")
    p.add_argument("--no-flip", action="store_true", help="real latents of the training photos only, not also of their mirror images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache (default ~/.cache/vae-dogs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bars (logs stay)")
    args = p.parse_args(argv)
    if min(args.fake_latents, args.channels, args.blocks, args.steps, args.batch_size, args.log_every) < 1:
        p.error("--fake-latents, --channels, --blocks, --steps, --batch-size and --log-every must be positive")
    if args.fake_latents < 100:
        p.error("--fake-latents must be at least 100 (some are held back to pick the step)")
    if args.patience < 0:
        p.error("--patience must not be negative")
    if not 0 < args.stop_fraction < 1:
        p.error("--stop-fraction must lie between 0 and 1")
    if args.out.resolve() == args.checkpoint.resolve():
        p.error("--out must be another folder")
    return args


def noised_batch(prior: LatentDiffusion, x: torch.Tensor, t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised latents -> (the same at random, or given, diffusion times, those times)."""
    t = torch.rand(len(x), device=x.device) if t is None else t
    x_t, _ = prior.noised(x, t, torch.randn_like(x))
    return x_t, t


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, card = checkpoint.load(args.checkpoint, device)
    prior = model.latent_prior
    if not isinstance(prior, LatentDiffusion):
        raise SystemExit(f"{args.checkpoint} has no diffusion prior (latent_prior={model.cfg.latent_prior!r}); "
                         "discriminator guidance corrects a diffusion sampler")
    # The fakes come from the sampler as it is, without any earlier discriminator's guidance.
    model.cfg.diffusion_discriminator_guidance = 0.0
    torch.manual_seed(args.seed)
    with torch.no_grad():
        real_z, real_y, _, _, mirrored_z = split_latents(model, card, args.data, args.cache_dir, device, mirrored=not args.no_flip)
    fake_z, fake_y = balanced_latents(model, args.fake_latents, seed=args.seed + 1, batch=256, progress=not args.no_progress)

    generator = torch.Generator().manual_seed(args.seed)
    real_order, fake_order = torch.randperm(len(real_z), generator=generator), torch.randperm(len(fake_z), generator=generator)
    # at least one latent of each kind per time band (the check's times are spread evenly over each kind)
    n_real_stop, n_fake_stop = (max(len(TIME_BANDS), int(args.stop_fraction * len(z))) for z in (real_z, fake_z))
    n_breeds = model.cfg.n_breeds

    def standardised(z: torch.Tensor) -> torch.Tensor:
        return ((z.to(device) - prior.z_mean) / prior.z_scale).float()

    def split(z: torch.Tensor, y: torch.Tensor, order: torch.Tensor, n_stop: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        return (standardised(z[order[n_stop:]]), y[order[n_stop:]]), (standardised(z[order[:n_stop]]), y[order[:n_stop]])

    (train_real, train_real_y), (stop_real, stop_real_y) = split(real_z, real_y, real_order, n_real_stop)
    if mirrored_z is not None:  # a mirrored photo is as real as the photo (its mirror is never in the stopping slice)
        train_real = torch.cat([train_real, standardised(mirrored_z[real_order[n_real_stop:]])])
        train_real_y = torch.cat([train_real_y, train_real_y])
    (train_fake, train_fake_y), (stop_fake, stop_fake_y) = split(fake_z, fake_y, fake_order, n_fake_stop)

    model.cfg.diffusion_discriminator_channels, model.cfg.diffusion_discriminator_blocks = args.channels, args.blocks
    discriminator = LatentDiscriminator(model.cfg).to(device)
    model.latent_discriminator = discriminator
    print(f"{len(train_real)} real / {len(train_fake)} sampled training latents, {n_real_stop} / {n_fake_stop} held back "
          f"to pick the step; discriminator: {sum(p.numel() for p in discriminator.parameters()):,} parameters on {device}", flush=True)

    # Early-stopping set: fixed times (evenly spaced over each kind) and noise, so every check scores the same noisy latents.
    stop_x = torch.cat([stop_real, stop_fake])
    stop_w = F.one_hot(torch.cat([stop_real_y, stop_fake_y]), n_breeds).float().to(device)
    stop_label = torch.cat([torch.ones(len(stop_real)), torch.zeros(len(stop_fake))]).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        stop_t = torch.cat([((torch.arange(n) + 0.5) / n)[torch.randperm(n)] for n in (len(stop_real), len(stop_fake))]).to(device)
        stop_x_t, _ = noised_batch(prior, stop_x, stop_t)

    real_draws = balanced_indices(train_real_y, args.steps * args.batch_size, generator)  # every breed as often as in the fakes
    opt = torch.optim.AdamW(discriminator.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    args.out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] = (float("inf"), 0, {})
    checks_since_best, started, running, since_log = 0, time.time(), 0.0, 0
    bar = tqdm(range(args.steps), desc="discriminator", disable=args.no_progress)
    for step in bar:
        discriminator.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=100)
        real_rows = real_draws[step * args.batch_size : (step + 1) * args.batch_size]
        fake_rows = torch.randint(len(train_fake), (args.batch_size,), generator=generator)
        x_t, t = noised_batch(prior, torch.cat([train_real[real_rows], train_fake[fake_rows]]))
        w = F.one_hot(torch.cat([train_real_y[real_rows], train_fake_y[fake_rows]]), n_breeds).float().to(device)
        label = torch.cat([torch.ones(args.batch_size), torch.zeros(args.batch_size)]).to(device)
        loss = F.binary_cross_entropy_with_logits(discriminator(x_t, t, w), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running, since_log = running + loss.item(), since_log + 1
        if (step + 1) % args.log_every and step + 1 != args.steps:
            continue
        discriminator.eval()
        with torch.no_grad():
            logits = discriminator(stop_x_t, stop_t, stop_w)
        # Real and sampled latents count half each (the slices differ in size), so 0.693 and 50 % are chance.
        bce = F.binary_cross_entropy_with_logits(logits, stop_label, reduction="none")
        correct = ((logits > 0).float() == stop_label).float()
        real = stop_label.bool()
        entry: dict[str, Any] = {"step": step + 1, "seconds": round(time.time() - started, 1), "train_bce": running / since_log,
                                 "stop_bce": ((bce[real].mean() + bce[~real].mean()) / 2).item()}
        for lo, hi in TIME_BANDS:
            band = (stop_t >= lo) & (stop_t < hi)
            entry[f"stop_accuracy_t{lo:g}-{hi:g}"] = round(((correct[band & real].mean() + correct[band & ~real].mean()) / 2).item(), 4)
        running, since_log = 0.0, 0
        history.append(entry)
        with open(args.out / "discriminator-metrics.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        if entry["stop_bce"] < best[0]:
            best, checks_since_best = (entry["stop_bce"], step + 1, {k: v.detach().clone() for k, v in discriminator.state_dict().items()}), 0
        else:
            checks_since_best += 1
        bar.set_postfix(stop_bce=f"{entry['stop_bce']:.4f}", best_step=best[1])
        if args.patience and checks_since_best >= args.patience:
            print(f"stopped at step {step + 1}: no better early-stopping cross-entropy for {args.patience} checks", flush=True)
            break
    discriminator.load_state_dict(best[2])
    discriminator.eval()

    new_card = {k: v for k, v in card.items() if k not in ("evaluation", "format", "config", "torch_version", "weights_sha256")}
    new_card["discriminator_training"] = {
        "source": str(args.checkpoint), "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "real_latents": len(train_real), "sampled_latents": len(train_fake), "best_step": best[1], "history": history,
        "git_commit": git_commit()}
    checkpoint.save(model, new_card, args.out)
    kept = next(e for e in history if e["step"] == best[1])
    bands = ", ".join(f"t in [{lo:g}, {hi:g}): {kept[f'stop_accuracy_t{lo:g}-{hi:g}']:.1%}" for lo, hi in TIME_BANDS)
    print(f"wrote {args.out}: kept step {best[1]}, early-stopping cross-entropy {kept['stop_bce']:.4f}, accuracy {bands}. "
          f"Next: python -m training.sampling {args.out} --data {args.data} --out OUT --discriminator-guidance 0.5,1,2", flush=True)
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
