"""Checkpoints without pickle: ``model.safetensors`` (weights) + ``card.json`` (everything else).

The card holds the architecture config (``config``: the VAE; ``prior``: its kind, the denoiser's and the guide's
architecture, a distilled student's with its steps and teacher settings, a mix reader's), the sampler settings
(``sampling``), the breed identifier's settings (``identifier``; its trunk comes from its package, its head is in the
weights), the ordered breed list with photo counts, the split recipe and held-out ids, training and evaluation
metrics, torch version, git commit and the SHA-256 of the weights, which :func:`load` verifies. Every write goes to a
temporary file that is then renamed over the target, so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.autoencoder import BreedVAE, VAEConfig
from model.diffusion import DiffusionConfig, LatentDiffusion
from model.identifier import BreedIdentifier, IdentifierConfig
from model.prior import DiffusionPrior, DogModel, GaussianPrior, LatentPrior, Student
from model.reader import MixReader, ReaderConfig
from model.sampler import SamplerSettings

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
CARD_FORMAT = "vae-dogs/2"
# mkstemp makes 0600 files; a checkpoint must stay readable by a service running as another user.
PUBLIC_FILE_MODE = 0o644
REQUIRED_CARD_KEYS = ("format", "config", "prior", "sampling", "breeds", "weights_sha256")
HALF_PRECISION_PREFIXES = ("latent_prior.", "guide_prior.", "student_prior.")


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


def prior_card(prior: LatentPrior) -> dict[str, Any]:
    if isinstance(prior, DiffusionPrior):
        guide = prior.guide.cfg.to_dict() if prior.guide is not None else None
        spec = {"kind": prior.kind, "config": prior.denoiser.cfg.to_dict(), "guide": guide}
        if prior.student is not None:
            student = prior.student
            spec["student"] = {
                "config": student.denoiser.cfg.to_dict(),
                "steps": student.steps,
                "teacher": student.teacher.to_dict(),
            }
        if prior.reader is not None:
            spec["reader"] = prior.reader.cfg.to_dict()
        return spec
    return {"kind": prior.kind}


def stored(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """The tensor as written: the denoisers' float32 weights as float16, which halves the weights file's largest part
    (they load back into float32 modules; docs/experiments.md measures the samples unchanged), the rest as they are."""
    if (
        name.startswith(HALF_PRECISION_PREFIXES)
        and tensor.dtype == torch.float32
        and tensor.abs().max() < torch.finfo(torch.float16).max
    ):
        return tensor.half()
    return tensor


def save(model: DogModel, card: dict[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write weights then card (the card names the weights' hash, so it is written last)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: stored(k, v.detach().cpu().contiguous()) for k, v in model.state_dict().items()}
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
        "config": model.vae.cfg.to_dict(),
        "prior": prior_card(model.prior),
        "sampling": model.sampling.to_dict(),
        "identifier": model.identifier.cfg.to_dict() if model.identifier is not None else None,
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
    if card.get("format") != CARD_FORMAT:
        raise CheckpointError(f"checkpoint card {path} has format {card.get('format')!r}, expected {CARD_FORMAT!r}")
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise CheckpointError(f"checkpoint card {path} lacks {', '.join(missing)}")
    breeds = card["breeds"]
    if not isinstance(breeds, list) or not all(isinstance(b, dict) and isinstance(b.get("name"), str) for b in breeds):
        raise CheckpointError(f"checkpoint card {path}: 'breeds' must be a list of {{name, photos}} objects")
    return card


def build(card: dict[str, Any]) -> DogModel:
    """The (untrained) model a card describes."""
    vae = BreedVAE(VAEConfig.from_dict(card["config"]))
    spec = card["prior"]
    if spec["kind"] == "gaussian":
        prior: LatentPrior = GaussianPrior(vae)
    elif spec["kind"] == "diffusion":
        shape = vae.cfg.latent_shape
        denoiser = LatentDiffusion(DiffusionConfig.from_dict(spec["config"]), vae.cfg.n_breeds, shape)
        guide = (
            LatentDiffusion(DiffusionConfig.from_dict(spec["guide"]), vae.cfg.n_breeds, shape)
            if spec.get("guide")
            else None
        )
        student = None
        if spec.get("student"):
            about = spec["student"]
            student = Student(
                LatentDiffusion(DiffusionConfig.from_dict(about["config"]), vae.cfg.n_breeds, shape),
                int(about["steps"]),
                SamplerSettings.from_dict(about["teacher"]),
            )
        reader = (
            MixReader(ReaderConfig.from_dict(spec["reader"]), vae.cfg.n_breeds, shape) if spec.get("reader") else None
        )
        prior = DiffusionPrior(denoiser, guide, student, reader)
    else:
        raise ValueError(f"unknown prior kind {spec['kind']!r} (known: gaussian, diffusion)")
    identifier = BreedIdentifier(IdentifierConfig.from_dict(card["identifier"])) if card.get("identifier") else None
    return DogModel(vae, prior, SamplerSettings.from_dict(card["sampling"]), identifier)


def load(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[DogModel, dict[str, Any]]:
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
        model = build(card)
        load_weights(model, load_file(str(weights)))
    except Exception as err:  # safetensors, torch and the configs raise several types for a bad file
        raise CheckpointError(f"checkpoint {weights} cannot be loaded: {err}") from err
    if model.n_breeds != len(card["breeds"]):
        raise CheckpointError(
            f"checkpoint {folder}: {len(card['breeds'])} breeds in the card, {model.n_breeds} in the model"
        )
    return model.to(device).eval(), card


def load_weights(model: DogModel, state: dict[str, torch.Tensor]) -> None:
    """Every weight of ``model`` from one flat state dict (the layout of ``DogModel.state_dict``), strictly."""
    parts = model.stored_parts()
    own = {k: v for k, v in state.items() if not k.startswith(tuple(f"{p}." for p in parts))}
    model.vae.load_state_dict(own)
    for prefix, module in parts.items():
        module.load_state_dict({k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(f"{prefix}.")})


def attach_guide(model: DogModel, guide_folder: str | os.PathLike[str]) -> DogModel:
    """``model`` with the diffusion prior of checkpoint ``guide_folder`` as its autoguidance guide.

    The guide must have been trained by ``python -m training.prior`` on the latents of the same VAE (every encoder,
    decoder and breed-head weight equal) with the same standardisation, so both denoisers read the same noisy
    latents; anything else is refused. The sampler settings are kept (autoguidance 1: the guide unused).
    """
    if not isinstance(model.prior, DiffusionPrior):
        raise CheckpointError(f"autoguidance needs a diffusion prior; this model's is {model.prior.kind!r}")
    other, _ = load(guide_folder, model.device)
    if not isinstance(other.prior, DiffusionPrior):
        raise CheckpointError(f"guide {guide_folder} has no diffusion prior (its prior is {other.prior.kind!r})")
    ours, theirs = model.vae.state_dict(), other.vae.state_dict()
    if any(k not in theirs or not torch.equal(ours[k], theirs[k]) for k in ours):
        raise CheckpointError(
            f"guide {guide_folder} was trained on another VAE (its weights differ); "
            "train it with --init-from this checkpoint"
        )
    for buffer in ("z_mean", "z_scale"):
        mine, its = getattr(model.prior.denoiser, buffer), getattr(other.prior.denoiser, buffer)
        if not torch.allclose(mine, its, rtol=1e-4, atol=1e-5):
            raise CheckpointError(
                f"guide {guide_folder} standardises the latents differently ({buffer}); train it on the same latents "
                "(--init-from this checkpoint, the same --seed, --stop-fraction and mirroring)"
            )
    # A student distilled without this guide imitates another sampler, and a reader read that sampler's mixes: both
    # are dropped with the old guide.
    sampling = replace(model.sampling, distilled=False)
    return replace(model, prior=DiffusionPrior(model.prior.denoiser, other.prior.denoiser), sampling=sampling)
