"""Pack a checkpoint's latents for a machine that has neither the photos nor room for the checkpoint: a GPU lent for
minutes, which receives at most 64 MiB of working tree (docs/gpu.md).

    python -m training.pack --init-from checkpoints/dogs120 --data ../shared/kaggle-dog-breed-identification \
        ../shared/dogs --out runs/pack/dogs120.safetensors

One file: the posterior means of the checkpoint's training photos, of their mirror images and of its held-out
photos (``training.prior``'s split, so no held-out photo is trained on), each number at 8 bits (its range over all
of them in 255 steps: off by at most half a step), with the breeds and a digest of the encoder that made them.
``python -m training.prior --pack FILE`` trains a prior from it alone; only latents and breed indices are in it,
never a photo.
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
from training.common import resolve_device, set_threads

PACK_FORMAT = "vae-dogs-latent-pack/1"
LEVELS = 255


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


def encoder_digest(vae: BreedVAE) -> str:
    """SHA-256 of the encoder's weights: a pack and a checkpoint belong together when the latents came from it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_pack(pack: Pack, path: Path) -> Path:
    """Quantise every latent number to 8 bits over its range in all three sets, and save."""
    everything = torch.cat([pack.train_z, pack.mirrored_z, pack.val_z])
    low, high = everything.min(0).values, everything.max(0).values
    step = ((high - low) / LEVELS).clamp_min(1e-12)

    def quantised(z: torch.Tensor) -> torch.Tensor:
        return ((z - low) / step).round().clamp(0, LEVELS).to(torch.uint8)

    tensors = {
        "train": quantised(pack.train_z),
        "mirrored": quantised(pack.mirrored_z),
        "val": quantised(pack.val_z),
        "train_breeds": pack.train_y.to(torch.int64),
        "val_breeds": pack.val_y.to(torch.int64),
        "low": low.float().contiguous(),
        "step": step.float().contiguous(),
    }
    meta = {
        "format": PACK_FORMAT,
        "breeds": json.dumps(pack.breeds),
        "latent_shape": json.dumps(list(pack.latent_shape)),
        "encoder": pack.encoder,
    }
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
    low, step = t["low"], t["step"]

    def latents(q: torch.Tensor) -> torch.Tensor:
        return low + q.float() * step

    return Pack(
        train_z=latents(t["train"]),
        train_y=t["train_breeds"],
        val_z=latents(t["val"]),
        val_y=t["val_breeds"],
        mirrored_z=latents(t["mirrored"]),
        breeds=json.loads(meta["breeds"]),
        latent_shape=tuple(json.loads(meta["latent_shape"])),
        encoder=meta["encoder"],
    )


def main(argv: list[str] | None = None) -> Path:
    from training.prior import split_latents  # the prior's own split and encoding

    p = argparse.ArgumentParser(prog="python -m training.pack", description=__doc__.split("\n")[0])
    p.add_argument("--init-from", type=Path, required=True, help="the checkpoint whose encoder makes the latents")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="the data folders it was trained on")
    p.add_argument("--out", type=Path, required=True, help="the pack file to write (.safetensors)")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache (default ~/.cache/vae-dogs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    model, card = checkpoint.load(args.init_from, device)
    with torch.no_grad():
        train_z, train_y, val_z, val_y, mirrored_z = split_latents(
            model, card, args.data, args.cache_dir, device, mirrored=True
        )
    pack = Pack(
        train_z, train_y, val_z, val_y, mirrored_z, [b["name"] for b in card["breeds"]],
        tuple(model.vae.cfg.latent_shape), encoder_digest(model.vae),
    )  # fmt: skip
    write_pack(pack, args.out)
    print(
        f"wrote {args.out}: {len(train_z)} training latents and their mirror images, {len(val_z)} held out, "
        f"{args.out.stat().st_size / 2**20:.1f} MiB",
        flush=True,
    )
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
