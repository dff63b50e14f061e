"""Checkpoints without pickle: ``model.safetensors`` (weights) + ``card.json`` (everything else).

The card holds the architecture config, the ordered breed list with photo counts, the split recipe and
held-out ids, training and evaluation metrics, torch version, git commit and the SHA-256 of the weights,
which :func:`load` verifies. Every write goes to a temporary file that is then renamed over the target,
so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.vae import BreedVAE, LatentDiffusion, VAEConfig

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
CARD_FORMAT = "vae-dogs/1"
# mkstemp makes 0600 files; a checkpoint must stay readable by a service running as another user.
PUBLIC_FILE_MODE = 0o644
REQUIRED_CARD_KEYS = ("format", "config", "breeds", "weights_sha256")
# Weights of the sampler on top of stage 1 (prior, autoguidance guide, latent discriminator), by state-dict prefix.
SAMPLER_PARTS = ("latent_prior.", "guide_prior.", "latent_discriminator.")


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete or corrupt."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, PUBLIC_FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save(model: BreedVAE, card: dict[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write weights then card (the card names the weights' hash, so it is written last)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{WEIGHTS_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": CARD_FORMAT})
        os.chmod(tmp, PUBLIC_FILE_MODE)
        os.replace(tmp, folder / WEIGHTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    full_card = {
        "format": CARD_FORMAT,
        **card,
        "config": model.cfg.to_dict(),
        "torch_version": torch.__version__,
        "weights_sha256": sha256_file(folder / WEIGHTS_FILE),
    }
    atomic_write_json(folder / CARD_FILE, full_card)
    return folder


def read_card(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint card {path} does not exist")
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint card {path} is not valid JSON: {err}") from err
    if not isinstance(card, dict):
        raise CheckpointError(f"checkpoint card {path} is not a JSON object")
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise CheckpointError(f"checkpoint card {path} lacks {', '.join(missing)}")
    if card["format"] != CARD_FORMAT:
        raise CheckpointError(f"checkpoint card {path} has format {card['format']!r}, expected {CARD_FORMAT!r}")
    breeds = card["breeds"]
    if not isinstance(breeds, list) or not all(isinstance(b, dict) and isinstance(b.get("name"), str) for b in breeds):
        raise CheckpointError(f"checkpoint card {path}: 'breeds' must be a list of {{name, photos}} objects")
    return card


def load(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[BreedVAE, dict[str, Any]]:
    """Load and verify a checkpoint folder; returns the model in eval mode on ``device`` and its card."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    card = read_card(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} do not exist")
    if sha256_file(weights) != card["weights_sha256"]:
        raise CheckpointError(f"checkpoint weights {weights} do not match the SHA-256 in {folder / CARD_FILE}")
    try:
        cfg = VAEConfig.from_dict(card["config"])
        model = BreedVAE(cfg)
        model.load_state_dict(load_file(str(weights)))
    except Exception as err:  # safetensors and torch raise several types for a bad file
        raise CheckpointError(f"checkpoint {weights} cannot be loaded: {err}") from err
    if cfg.n_breeds != len(card["breeds"]):
        raise CheckpointError(f"checkpoint {folder}: {len(card['breeds'])} breeds in the card, {cfg.n_breeds} in the model")
    return model.to(device).eval(), card


def attach_guide(model: BreedVAE, guide_folder: str | os.PathLike[str]) -> None:
    """Make the diffusion prior of checkpoint ``guide_folder`` the autoguidance guide of ``model`` (in place).

    The guide must have been trained by ``python -m training.prior --kind diffusion`` on the latents of the same
    stage 1 (every encoder, decoder and breed-head weight equal) with the same standardisation, so both denoisers
    read the same noisy latents; anything else is refused. ``diffusion_autoguidance`` is left as it was (1: unused).
    """
    if not isinstance(model.latent_prior, LatentDiffusion):
        raise CheckpointError(f"autoguidance needs a diffusion prior; this model's is {model.cfg.latent_prior!r}")
    guide, _ = load(guide_folder, model.prior_mean.device)
    if not isinstance(guide.latent_prior, LatentDiffusion):
        raise CheckpointError(f"guide {guide_folder} has no diffusion prior (latent_prior={guide.cfg.latent_prior!r})")
    ours, theirs = model.state_dict(), guide.state_dict()
    stage1 = [k for k in ours if not k.startswith(SAMPLER_PARTS)]
    if any(k not in theirs or not torch.equal(ours[k], theirs[k]) for k in stage1):
        raise CheckpointError(f"guide {guide_folder} was trained on another stage 1 (its VAE weights differ); "
                              "train it with --init-from this checkpoint")
    for buffer in ("z_mean", "z_scale"):
        if not torch.allclose(getattr(model.latent_prior, buffer), getattr(guide.latent_prior, buffer), rtol=1e-4, atol=1e-5):
            raise CheckpointError(f"guide {guide_folder} standardises the latents differently ({buffer}); train it on the "
                                  "same latents (--init-from this checkpoint, the same --seed, --stop-fraction and mirroring)")
    model.cfg.diffusion_guide_channels = guide.cfg.diffusion_channels
    model.cfg.diffusion_guide_blocks = guide.cfg.diffusion_blocks
    model.cfg.diffusion_guide_attention = guide.cfg.diffusion_attention
    model.guide_prior = guide.latent_prior
