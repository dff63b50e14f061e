"""Fit a learned latent prior (diffusion, or two-stage VAE) to a trained checkpoint and write a new checkpoint.

    python -m training.prior --kind diffusion --init-from runs/spatial64 --data ../shared/dogs --out runs/diff96a \
        --steps 4000 --diffusion-channels 96 --attention --lr 2e-3 --sampling-steps 8
    python -m training.prior --kind diffusion --init-from runs/diff96a --prior-from runs/diff96a --data ../shared/dogs \
        --out runs/diff96b --steps 4000 --diffusion-channels 96 --attention --lr 5e-4 --sampling-steps 8 --patience 0
    python -m training.prior --init-from runs/dogs64 --data ../shared/dogs --out runs/dogs64-prior   # two-stage

``--kind diffusion`` trains :class:`model.vae.LatentDiffusion` (for spatial latents: the default checkpoint);
the default ``--kind two_stage`` trains :class:`model.vae.LatentPrior`, described below.

Stage 1 (``python -m training``) leaves a VAE whose decoder only knows the thin set of latents that real
photos occupy; per-breed Gaussians over them (its ex-post prior) sample mostly off that set, and those
latents decode to texture soup. This command encodes the checkpoint's own training photos (the card's split,
so no held-out photo is seen), trains a small breed-conditional model of those latents, keeps the step
whose score on a slice of them it did not train on is best (early stopping: the negative ELBO for the
two-stage VAE, the denoising error at fixed times and noise for diffusion), and writes the same model with
``latent_prior`` set to the kind: sampling, mixing and morphing then go through that prior. The encoder,
decoder, breed head and ex-post Gaussians are copied unchanged. The training latents are those of the photos and
of their mirror images (``--no-flip``: the photos only); what is checked and kept is an exponential moving
average of the prior's weights (``--ema``, 0.999), the usual practice for diffusion models. One process, minutes on 2 CPU cores; it
runs on a GPU when there is one (``--device``). Writes ``prior-metrics.jsonl`` (one line per ``--log-every``
steps, with the early-stopping and held-out latents' scores) and ``figures/samples-prior.png`` (8 samples per breed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import checkpoint, latent_ops
from model.checkpoint import SAMPLER_PARTS
from model.imaging import labelled_rows
from model.vae import BreedVAE, VAEConfig
from training.data import balanced_indices, find_photos, limit_per_breed, load_images
from training.evaluate import held_out_photos
from training.train import git_commit, lr_at, posterior_means, resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.prior", description=__doc__.split("\n")[0])
    p.add_argument("--init-from", type=Path, required=True, help="a checkpoint made by python -m training")
    p.add_argument("--data", type=Path, required=True, help="the data folder that checkpoint was trained on")
    p.add_argument("--out", type=Path, required=True, help="output folder for the new checkpoint")
    p.add_argument("--prior-from", type=Path, default=None,
                   help="start the prior from this checkpoint's prior (same kind and architecture) instead of from "
                        "scratch, e.g. to train a finished prior for longer with a new schedule")
    p.add_argument("--kind", choices=("two_stage", "diffusion"), default="two_stage",
                   help="two_stage: an MLP VAE on the latents (Dai & Wipf); diffusion: a convolutional denoising "
                        "diffusion model (for spatial latents, --latent-channels)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--noise-dim", type=int, default=64, help="size of the prior's noise u")
    p.add_argument("--hidden", type=int, default=512, help="width of the prior's MLPs")
    p.add_argument("--residual-scale", type=float, default=0.5,
                   help="share of the prior's learned output noise added to samples (0: its mean, 1: its full density)")
    p.add_argument("--diffusion-channels", type=int, default=128, help="width of the diffusion denoiser")
    p.add_argument("--diffusion-blocks", type=int, default=6, help="residual blocks of the diffusion denoiser")
    p.add_argument("--attention", action="store_true",
                   help="diffusion: a self-attention layer after every second residual block of the denoiser")
    p.add_argument("--ema", type=float, default=0.999,
                   help="decay of the exponential moving average of the prior's weights that is checked and kept (0: none)")
    p.add_argument("--no-flip", action="store_true",
                   help="train on the training photos' latents only, not also on those of their mirror images")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale of diffusion samples")
    p.add_argument("--sampling-steps", type=int, default=32, help="DDIM steps of diffusion samples")
    p.add_argument("--log-every", type=int, default=250, help="steps between held-out checks (and log lines)")
    p.add_argument("--patience", type=int, default=8,
                   help="stop after this many checks without a better early-stopping ELBO (0: run all --steps)")
    p.add_argument("--stop-fraction", type=float, default=0.05,
                   help="share of the training latents held back to pick the step with the best held-out ELBO")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache (default ~/.cache/vae-dogs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bar (logs stay)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.noise_dim < 1 or args.hidden < 1:
        p.error("--steps, --batch-size, --noise-dim and --hidden must be positive")
    if not 0 <= args.residual_scale <= 1:
        p.error("--residual-scale must lie between 0 and 1")
    if args.patience < 0:
        p.error("--patience must not be negative")
    if not 0 < args.stop_fraction < 1:
        p.error("--stop-fraction must lie between 0 and 1")
    if not (math.isfinite(args.guidance) and args.guidance >= 0):
        p.error("--guidance must be a finite number of at least 0 (1: no guidance)")
    if not 0 <= args.ema < 1:
        p.error("--ema must lie in [0, 1)")
    return args


def split_latents(model: BreedVAE, card: dict[str, Any], data: Path, cache_dir: Path | None, device: torch.device,
                  mirrored: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Posterior means and breed indices of the checkpoint's training and held-out photos, and (``mirrored``)
    the posterior means of the training photos' mirror images, row for row."""
    breeds = [b["name"] for b in card["breeds"]]
    photos = limit_per_breed(find_photos(data), (card.get("training") or {}).get("max_per_breed"))
    if photos.breeds != breeds:
        raise SystemExit(f"{data} has breeds {photos.breeds}, but the checkpoint was trained on {breeds}")
    images = load_images(photos, model.cfg.image_size, cache_dir)
    val = held_out_photos(card, images, data)
    held_out = set(val.ids)
    train = images.select([i for i in images.ids if i not in held_out])
    index = {b: i for i, b in enumerate(breeds)}
    return (posterior_means(model, train.pixels, device), torch.tensor([index[b] for b in train.breeds]),
            posterior_means(model, val.pixels, device), torch.tensor([index[b] for b in val.breeds]),
            posterior_means(model, train.pixels[:, :, ::-1], device) if mirrored else None)


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


def save_with_prior(model: BreedVAE, prior_state: dict[str, torch.Tensor], card: dict[str, Any], out: Path) -> None:
    """Write ``model`` with the prior weights ``prior_state`` (e.g. the best averaged ones); its own stay as they were."""
    prior = model.latent_prior
    assert prior is not None
    own = {k: v.detach().clone() for k, v in prior.state_dict().items()}
    prior.load_state_dict(prior_state)
    checkpoint.save(model, card, out)
    prior.load_state_dict(own)


PRIOR_FIELDS = ("latent_prior", "prior_noise_dim", "prior_hidden", "diffusion_channels", "diffusion_blocks",
                "diffusion_attention", "latent_dim", "latent_channels", "n_breeds")


def start_prior(model: BreedVAE, source: Path, device: torch.device) -> None:
    """Copy the prior (weights and standardisation) of checkpoint ``source`` into ``model``; exits if it differs."""
    other, _ = checkpoint.load(source, device)
    differ = [f for f in PRIOR_FIELDS if getattr(other.cfg, f) != getattr(model.cfg, f)]
    if differ:
        raise SystemExit(f"--prior-from: {source} has another prior ({', '.join(f'{f}={getattr(other.cfg, f)!r}' for f in differ)})")
    assert model.latent_prior is not None and other.latent_prior is not None
    model.latent_prior.load_state_dict(other.latent_prior.state_dict())


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    source, card = checkpoint.load(args.init_from, device)
    cfg = VAEConfig.from_dict(source.cfg.to_dict() | {
        "latent_prior": args.kind, "prior_noise_dim": args.noise_dim, "prior_hidden": args.hidden,
        "prior_residual_scale": args.residual_scale, "diffusion_channels": args.diffusion_channels,
        "diffusion_blocks": args.diffusion_blocks, "diffusion_guidance": args.guidance,
        "diffusion_sampling_steps": args.sampling_steps, "diffusion_attention": args.attention,
        # a new prior drops the source's autoguidance guide and latent discriminator: both were weighed against the old prior
        "diffusion_guide_channels": 0, "diffusion_autoguidance": 1.0,
        "diffusion_discriminator_channels": 0, "diffusion_discriminator_guidance": 0.0})
    if source.cfg.latent_prior == "standard":
        raise SystemExit(f"{args.init_from} is a plain VAE (--plain); a learned prior is for the breed-conditional model")
    torch.manual_seed(args.seed)
    model = BreedVAE(cfg).to(device)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(SAMPLER_PARTS)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("latent_prior.") for k in missing):
        raise SystemExit(f"{args.init_from}: unexpected weights {unexpected[:3]} or missing {missing[:3]}")
    if args.prior_from:
        start_prior(model, args.prior_from, device)
    model.eval()
    prior = model.latent_prior
    assert prior is not None
    two_stage = args.kind == "two_stage"
    # What picks the step: the ELBO of the two-stage VAE in nats per latent, or the diffusion model's
    # denoising (v-prediction) mean squared error at random times.
    metric = "neg_elbo" if two_stage else "denoising_mse"

    with torch.no_grad():
        train_z, train_y, val_z, val_y, mirrored_z = split_latents(model, card, args.data, args.cache_dir, device,
                                                                   mirrored=not args.no_flip)
    # Early stopping: the prior overfits ~17k latents within a few thousand steps (its held-out ELBO turns
    # up). A slice of the *training* latents picks the step, so the checkpoint's held-out photos stay
    # unseen until evaluation.
    generator = torch.Generator().manual_seed(args.seed)
    shuffled = torch.randperm(len(train_z), generator=generator)
    n_stop = max(1, int(args.stop_fraction * len(train_z)))
    stop_z, stop_y = train_z[shuffled[:n_stop]], train_y[shuffled[:n_stop]]
    train_z, train_y = train_z[shuffled[n_stop:]], train_y[shuffled[n_stop:]]
    if mirrored_z is not None:  # a mirrored dog is as much a dog of its breed; twice the latents to fit
        train_z, train_y = torch.cat([train_z, mirrored_z[shuffled[n_stop:]]]), torch.cat([train_y, train_y])
    if not args.prior_from:  # a prior carried on keeps the standardisation its weights were trained with
        prior.fit_standardisation(train_z.to(device))
    print(f"{len(train_z)} training / {n_stop} early-stopping / {len(val_z)} held-out latents of {args.init_from}; "
          f"prior: {sum(p.numel() for p in prior.parameters()):,} parameters on {device}", flush=True)
    n_breeds = cfg.n_breeds
    train_w = F.one_hot(train_y, n_breeds).float()
    checks = {"stop": (stop_z.to(device), F.one_hot(stop_y, n_breeds).float().to(device)),
              "val": (val_z.to(device), F.one_hot(val_y, n_breeds).float().to(device))}
    order = balanced_indices(train_y, args.steps * args.batch_size, generator)  # every breed equally often
    best: tuple[float, int, dict[str, torch.Tensor]] = (float("inf"), 0, {})
    started_from = checkpoint.read_card(args.prior_from).get("latent_prior_training") if args.prior_from else None

    def card_for(best_step: int) -> dict[str, Any]:
        new_card = {k: card[k] for k in ("breeds", "data", "split") if k in card}
        return new_card | {
            "training": card.get("training"),
            "training_metrics": card.get("training_metrics"),
            "history": card.get("history"),
            "latent_prior_training": {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                      "best_step": best_step, "history": history, "git_commit": git_commit(),
                                      "training_latents": len(train_z), "early_stopping_latents": n_stop,
                                      "prior_from": started_from},
            "git_commit": card.get("git_commit"),
            "init_from_card": {k: card.get(k) for k in ("training", "git_commit", "init_from_card")},
        }

    checks_since_best = 0
    opt = torch.optim.Adam(prior.parameters(), lr=args.lr)
    average = WeightAverage(prior, args.ema) if args.ema else None
    args.out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    started, running, since_log = time.time(), 0.0, 0
    prior.train()
    bar = tqdm(range(args.steps), desc="latent prior", disable=args.no_progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=200)
        idx = order[step * args.batch_size : (step + 1) * args.batch_size]
        loss, _ = prior.loss(train_z[idx].to(device), train_w[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if average:
            average.update(prior)
        running, since_log = running + loss.item(), since_log + 1
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            entry: dict[str, Any] = {"step": step + 1, "seconds": round(time.time() - started, 1),
                                     f"train_{metric}": running / since_log}
            if average:  # the checks score the averaged weights (those that are kept); training goes on from its own
                trained = {k: v.detach().clone() for k, v in prior.state_dict().items()}
                prior.load_state_dict(average.state)
            prior.eval()
            with torch.no_grad():
                for name, (z, w) in checks.items():
                    torch.manual_seed(1234)  # the same noise (u, or diffusion times and noise) at every check
                    loss, aux = prior.loss(z, w)
                    entry[f"{name}_{metric}"] = loss.item()
                    if two_stage:
                        entry[f"{name}_kl"] = aux.item()
            if two_stage:
                entry["output_scale"] = prior.log_output_scale().exp().item()
            if average:
                prior.load_state_dict(trained)
            prior.train()
            if entry[f"stop_{metric}"] < best[0]:
                kept = average.state if average else prior.state_dict()
                best = (entry[f"stop_{metric}"], step + 1, {k: v.detach().clone() for k, v in kept.items()})
                checks_since_best = 0
            else:
                checks_since_best += 1
            running, since_log = 0.0, 0
            history.append(entry)
            with open(args.out / "prior-metrics.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
            if checks_since_best == 0:  # a run stopped early (or killed) leaves its best checkpoint so far
                save_with_prior(model, best[2], card_for(best[1]), args.out)
            bar.set_postfix(stop=f"{entry[f'stop_{metric}']:.4g}", best_step=best[1])
            if args.patience and checks_since_best >= args.patience:
                print(f"stopped at step {step + 1}: no better early-stopping ELBO for {args.patience} checks", flush=True)
                break
    prior.load_state_dict(best[2])
    model.eval()

    breeds = [b["name"] for b in card["breeds"]]
    (args.out / "figures").mkdir(exist_ok=True)
    samples = torch.cat([latent_ops.sample(model, 8, breed=b, seed=b) for b in range(n_breeds)])
    labelled_rows(samples, breeds, columns=8).save(args.out / "figures" / "samples-prior.png")
    save_with_prior(model, best[2], card_for(best[1]), args.out)
    kept = next(e for e in history if e["step"] == best[1])
    print(f"wrote {args.out}: kept step {best[1]} of {history[-1]['step']}, {metric} of the held-out photos' latents "
          f"{kept[f'val_{metric}']:.4g}, {history[-1]['seconds']:.0f}s", flush=True)
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
