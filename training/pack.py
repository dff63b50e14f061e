"""Pack a checkpoint's latents for a machine that has neither the photos nor room for the checkpoint: a GPU lent for
minutes, which receives at most 64 MiB of working tree (docs/gpu.md).

    python -m training.pack --init-from checkpoints/dogs120 --data ../shared/kaggle-dog-breed-identification \
        ../shared/dogs --out runs/pack/dogs120.safetensors

One file: the posterior means of the checkpoint's training photos, of their mirror images and of its held-out
photos (``training.prior``'s split, so no held-out photo is trained on), each number at 8 bits (its range over all
of them in 255 steps: off by at most half a step), with the breeds and a digest of the encoder that made them.
With ``--photo-dim N`` also the photo condition ``training.prior --photo-dim N`` would train on: the same photos'
whitened trunk embeddings at 8 bits and the fitted ``model.photo_prior.PhotoPrior`` (fitted on the rows a prior
with this ``--seed`` and ``--stop-fraction`` trains on, which the prior run checks). ``python -m training.prior
--pack FILE`` trains a prior from it alone; only latents, embeddings and breed indices are in it, never a photo.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model import checkpoint
from model.autoencoder import BreedVAE
from model.photo_prior import PhotoPrior
from training.common import resolve_device, set_threads

PACK_FORMAT = "vae-dogs-latent-pack/1"
LEVELS = 255


@dataclass
class PackedPhotos:
    """The photo condition of a pack: whitened trunk embeddings, row for row with the latents, and their prior."""

    train: torch.Tensor  # (n, dim) float32
    mirrored: torch.Tensor
    val: torch.Tensor
    prior: PhotoPrior
    seed: int  # the early-stopping split the prior was fitted without (training.prior's --seed, --stop-fraction)
    stop_fraction: float


@dataclass
class Pack:
    train_z: torch.Tensor  # (n, latent_dim) float32, the training photos' posterior means
    train_y: torch.Tensor  # (n,) breed indices
    val_z: torch.Tensor
    val_y: torch.Tensor
    mirrored_z: torch.Tensor  # row for row the mirror images of the training photos
    breeds: list[str]
    latent_shape: tuple[int, ...]
    encoder: str  # digest of the encoder weights that made the latents (:func:`encoder_digest`)
    photos: PackedPhotos | None = None


def encoder_digest(vae: BreedVAE) -> str:
    """SHA-256 of the encoder's weights: a pack and a checkpoint belong together when the latents came from it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def quantised(prefix: str, train: torch.Tensor, mirrored: torch.Tensor, val: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every column of the three sets at 8 bits over its range in all of them, with that range's low end and step."""
    everything = torch.cat([train, mirrored, val])
    low, high = everything.min(0).values, everything.max(0).values
    step = ((high - low) / LEVELS).clamp_min(1e-12)
    sets = {"train": train, "mirrored": mirrored, "val": val}
    out = {f"{prefix}{k}": ((x - low) / step).round().clamp(0, LEVELS).to(torch.uint8) for k, x in sets.items()}
    return out | {f"{prefix}low": low.float().contiguous(), f"{prefix}step": step.float().contiguous()}


def write_pack(pack: Pack, path: Path) -> Path:
    """Quantise every latent number (and photo number) to 8 bits over its range in all three sets, and save."""
    tensors = quantised("", pack.train_z, pack.mirrored_z, pack.val_z) | {
        "train_breeds": pack.train_y.to(torch.int64),
        "val_breeds": pack.val_y.to(torch.int64),
    }
    meta = {
        "format": PACK_FORMAT,
        "breeds": json.dumps(pack.breeds),
        "latent_shape": json.dumps(list(pack.latent_shape)),
        "encoder": pack.encoder,
    }
    if pack.photos is not None:
        photos = pack.photos
        tensors |= quantised("photo_", photos.train, photos.mirrored, photos.val)
        tensors |= {f"photo_prior.{k}": v.float().contiguous() for k, v in photos.prior.state_dict().items()}
        meta |= {"photo_seed": str(photos.seed), "photo_stop_fraction": repr(photos.stop_fraction)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def read_pack(path: Path) -> Pack:
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != PACK_FORMAT:
                raise SystemExit(f"{path} is not a latent pack ({PACK_FORMAT}); make one with python -m training.pack")
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except OSError as err:
        raise SystemExit(f"cannot read the latent pack {path}: {err}") from err

    def restored(prefix: str, name: str) -> torch.Tensor:
        return t[f"{prefix}low"] + t[f"{prefix}{name}"].float() * t[f"{prefix}step"]

    breeds = json.loads(meta["breeds"])
    photos = None
    if "photo_train" in t:
        state = {k.removeprefix("photo_prior."): v for k, v in t.items() if k.startswith("photo_prior.")}
        prior = PhotoPrior.from_state(state, len(breeds))
        photos = PackedPhotos(
            *(restored("photo_", name) for name in ("train", "mirrored", "val")),
            prior=prior,
            seed=int(meta["photo_seed"]),
            stop_fraction=float(meta["photo_stop_fraction"]),
        )
    return Pack(
        train_z=restored("", "train"),
        train_y=t["train_breeds"],
        val_z=restored("", "val"),
        val_y=t["val_breeds"],
        mirrored_z=restored("", "mirrored"),
        breeds=breeds,
        latent_shape=tuple(json.loads(meta["latent_shape"])),
        encoder=meta["encoder"],
        photos=photos,
    )


def main(argv: list[str] | None = None) -> Path:
    from training.prior import early_stopping_split, fit_photo_prior, split_latents  # the prior's own

    p = argparse.ArgumentParser(prog="python -m training.pack", description=__doc__.split("\n")[0])
    p.add_argument("--init-from", type=Path, required=True, help="the checkpoint whose encoder makes the latents")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="the data folders it was trained on")
    p.add_argument("--out", type=Path, required=True, help="the pack file to write (.safetensors)")
    p.add_argument(
        "--photo-dim",
        type=int,
        default=0,
        help="also pack the photo condition of training.prior --photo-dim N (0: latents only)",
    )
    p.add_argument("--seed", type=int, default=0, help="with --photo-dim: the prior run's --seed")
    p.add_argument("--stop-fraction", type=float, default=0.05, help="with --photo-dim: the prior's --stop-fraction")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache (default ~/.cache/vae-dogs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.photo_dim < 0 or not 0 < args.stop_fraction < 1:
        p.error("--photo-dim must not be negative, and --stop-fraction must lie between 0 and 1")
    set_threads(args.threads)
    device = resolve_device(args.device)
    model, card = checkpoint.load(args.init_from, device)
    with torch.no_grad():
        train_z, train_y, val_z, val_y, mirrored_z, *features = split_latents(
            model, card, args.data, args.cache_dir, device, mirrored=True, photo_features=args.photo_dim > 0
        )
    photos = None
    if features:
        generator = torch.Generator().manual_seed(args.seed)
        shuffled, n_stop = early_stopping_split(len(train_z), generator, args.stop_fraction)
        prior = fit_photo_prior(args.photo_dim, model.n_breeds, features[0], features[1], train_y, shuffled[n_stop:])
        photos = PackedPhotos(*(prior.whiten(f) for f in features), prior, args.seed, args.stop_fraction)
    pack = Pack(
        train_z, train_y, val_z, val_y, mirrored_z, [b["name"] for b in card["breeds"]],
        tuple(model.vae.cfg.latent_shape), encoder_digest(model.vae), photos,
    )  # fmt: skip
    write_pack(pack, args.out)
    print(
        f"wrote {args.out}: {len(train_z)} training latents and their mirror images, {len(val_z)} held out"
        + (f", each with {args.photo_dim} photo numbers" if photos else "")
        + f", {args.out.stat().st_size / 2**20:.1f} MiB",
        flush=True,
    )
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
