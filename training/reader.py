"""Train a checkpoint's mix reader on its own sampler's mixes, and write the checkpoint with it.

    python -m training.reader --init-from runs/dogs120/student --data ../shared/kaggle-dog-breed-identification \
        ../shared/dogs --out runs/dogs120/reader

The reader (``model/reader.py``) is ancestry's shortlist. Its examples are dogs drawn by the checkpoint's own sampler
at its default settings (the student's, when it is distilled), decoded and encoded again as ancestry reads an upload:
``--mixes`` latents of random conditions, a quarter pure
breeds, half two-breed mixes (the first breed's share uniform in [0.1, 0.9]) and a quarter three-breed mixes
(Dirichlet(1, 1, 1) weights). They are saved in ``--out`` (``reader-mixes.safetensors``), so a stopped run starts
again without drawing them. The reader learns the weights by cross-entropy against them; a tenth is held out and
reported in the card: how often its likeliest breed is a mix's largest share, and how often that breed is among its
``READ_BREEDS`` likeliest (ancestry's candidates). ``--data`` is not read (the reader learns from the model alone);
it is accepted so that a recipe stage can be run like the others. Run it after ``training.distill``: a new student
draws other dogs, and a distillation drops the reader.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from model import checkpoint, latent_ops
from model.prior import DiffusionPrior, DogModel
from model.reader import MixReader, ReaderConfig
from training.common import command_args, git_commit, lr_at, next_card, resolve_device, set_threads

MIXES_FILE = "reader-mixes.safetensors"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.reader", description=__doc__.split("\n")[0])
    p.add_argument("--init-from", type=Path, required=True, help="a checkpoint with a diffusion prior")
    p.add_argument("--data", type=Path, nargs="*", default=[], help="not read; accepted for recipe stages")
    p.add_argument("--out", type=Path, required=True, help="output folder for the new checkpoint")
    p.add_argument("--mixes", type=int, default=20000, help="latents drawn from the sampler to learn from")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--channels", type=int, default=32, help="the reader's width at the latent's resolution")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="not read; accepted for recipe stages")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bars")
    args = p.parse_args(argv)
    if min(args.mixes, args.epochs, args.batch_size, args.channels) < 1:
        p.error("--mixes, --epochs, --batch-size and --channels must be positive")
    if args.mixes < 10:
        p.error("--mixes must be at least 10 (a tenth is held out)")
    return args


def random_conditions(n: int, n_breeds: int, generator: torch.Generator) -> torch.Tensor:
    """(n, n_breeds) weights: a quarter pure breeds, half two-breed and a quarter three-breed mixes."""
    kind = torch.rand(n, generator=generator)
    parts = min(3, n_breeds)
    breeds = torch.stack([torch.randperm(n_breeds, generator=generator)[:parts] for _ in range(n)])
    shares = torch.zeros(n, parts)
    shares[:, 0] = 1.0
    two = (kind >= 0.25) & (kind < 0.75)
    first = 0.1 + 0.8 * torch.rand(n, generator=generator)
    shares[two, 0], shares[two, min(1, parts - 1)] = first[two], 1 - first[two]
    three = kind >= 0.75
    if parts == 3:
        gamma = -torch.rand(n, 3, generator=generator).clamp_min(1e-12).log()  # Dirichlet(1, 1, 1) by Gamma(1) draws
        shares[three] = gamma[three] / gamma[three].sum(1, keepdim=True)
    weights = torch.zeros(n, n_breeds)
    return weights.scatter_add_(1, breeds, shares)


@torch.inference_mode()
def draw_mixes(model: DogModel, n: int, seed: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` latents of dogs the model's sampler drew at its default settings, as ancestry sees them (decoded, then
    encoded again, like an uploaded picture of that dog), and the weights each was drawn for."""
    generator = torch.Generator().manual_seed(seed)
    weights = random_conditions(n, model.n_breeds, generator)
    dim = latent_ops.noise_dim(model)
    latents = []
    for chunk in tqdm(weights.split(256), desc="drawing mixes", disable=not progress):
        noise = torch.randn(len(chunk), dim, generator=generator).to(model.device)
        z = model.prior.sample(noise, chunk.to(model.device), model.sampling)
        mean, _ = model.vae.encode(latent_ops.decode(model, z, chunk).to(model.device))
        latents.append(mean.cpu())
    return torch.cat(latents), weights


def held_out_scores(reader: MixReader, z: torch.Tensor, w: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        read = torch.cat([reader.weights(chunk) for chunk in z.split(1024)])
    largest = w.argmax(1)
    among = read.topk(min(latent_ops.READ_BREEDS, w.shape[1]), dim=1).indices
    return {
        "held_out_cross_entropy": float(-(w * read.clamp_min(1e-12).log()).sum(1).mean()),
        "held_out_largest_first": float((read.argmax(1) == largest).float().mean()),
        "held_out_largest_in_candidates": float((among == largest[:, None]).any(1).float().mean()),
    }


def train_reader(
    reader: MixReader,
    z: torch.Tensor,
    w: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Fit ``reader`` to the weights ``w`` of latents ``z`` (the last tenth held out); one history row per epoch."""
    n_val = max(1, len(z) // 10)
    train_z, train_w, val_z, val_w = z[:-n_val], w[:-n_val], z[-n_val:], w[-n_val:]
    device = reader.z_mean.device
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = max(1, len(train_z) // batch_size)
    total, history, started = epochs * per_epoch, [], time.time()
    bar = tqdm(total=total, desc="reader", disable=not progress)
    for epoch in range(epochs):
        reader.train()
        order = torch.randperm(len(train_z), generator=generator)
        running = 0.0
        for i in range(per_epoch):
            step = epoch * per_epoch + i
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, lr, warmup=min(100, total // 10 + 1))
            idx = order[i * batch_size : (i + 1) * batch_size]
            logits = reader(train_z[idx].to(device))
            loss = -(train_w[idx].to(device) * F.log_softmax(logits, -1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()
            bar.update()
        reader.eval()
        entry = {
            "epoch": epoch + 1,
            "seconds": round(time.time() - started, 1),
            "train_cross_entropy": running / per_epoch,
        }
        history.append(entry | held_out_scores(reader, val_z.to(device), val_w.to(device)))
        bar.set_postfix(first=f"{history[-1]['held_out_largest_first']:.3f}")
    bar.close()
    return history


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    source, card = checkpoint.load(args.init_from, device)
    prior = source.prior
    if not isinstance(prior, DiffusionPrior):
        raise SystemExit(f"{args.init_from} has a {prior.kind} prior; the mix reader reads a diffusion prior's mixes")
    args.out.mkdir(parents=True, exist_ok=True)
    mixes = args.out / MIXES_FILE
    # The saved mixes are reused only for the same checkpoint, count and seed.
    wanted = {"weights_sha256": card["weights_sha256"], "mixes": str(args.mixes), "seed": str(args.seed)}
    saved = None
    if mixes.is_file():
        with safe_open(str(mixes), "pt") as f:
            saved = f.metadata() == wanted and {k: f.get_tensor(k) for k in ("z", "w")}
    if saved:
        z, w = saved["z"], saved["w"]
        print(f"{len(z)} mixes from {mixes}", flush=True)
    else:
        z, w = draw_mixes(source, args.mixes, args.seed, not args.no_progress)
        save_file({"z": z.contiguous(), "w": w.contiguous()}, str(mixes), metadata=wanted)
    torch.manual_seed(args.seed)
    reader = MixReader(ReaderConfig(channels=args.channels), source.n_breeds, source.vae.cfg.latent_shape).to(device)
    reader.z_mean.copy_(prior.denoiser.z_mean)
    reader.z_scale.copy_(prior.denoiser.z_scale)
    history = train_reader(reader, z, w, args.epochs, args.batch_size, args.lr, args.seed, not args.no_progress)
    reader.eval().requires_grad_(False)
    model = replace(source, prior=replace(prior, reader=reader))
    stage = {"command": "training.reader", "args": command_args(args), "git_commit": git_commit(), "history": history}
    checkpoint.save(model, next_card(card, stage), args.out)
    last = history[-1]
    print(
        f"wrote {args.out}: on {len(z) // 10} held-out mixes the reader's likeliest breed is the largest share of "
        f"{last['held_out_largest_first']:.1%}, among its {latent_ops.READ_BREEDS} likeliest in "
        f"{last['held_out_largest_in_candidates']:.1%}",
        flush=True,
    )
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
