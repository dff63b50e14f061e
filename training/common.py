"""Plumbing shared by the training commands: device, threads, provenance, schedules, latents, grids, resume state."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model import checkpoint
from model.autoencoder import BreedVAE
from model.sampler import SamplerSettings
from training.data import to_tensor


def resolve_device(device_arg: str) -> torch.device:
    """``auto`` -> cuda when there is a GPU, else cpu; anything else as given."""
    if device_arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device_arg)


def bf16_autocast(device: torch.device) -> torch.autocast:
    """Mixed precision for a training step's passes (the weights and the optimizer stay float32): bfloat16 on a GPU,
    and on a CPU that computes it natively (AVX-512 BF16 or AMX: about twice as fast as float32 for the denoiser on
    this project's 2 cores), float32 elsewhere, where emulated bfloat16 would be slower."""
    native = device.type == "cuda" or (
        device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    )
    return torch.autocast(device.type, torch.bfloat16, enabled=native)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
        commit = out.stdout.strip()
        return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None
    except (OSError, subprocess.SubprocessError):
        return None


def command_args(args: Any) -> dict[str, Any]:
    """A parsed command line as JSON-ready values, for the card."""

    def plain(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    return {k: plain(v) for k, v in vars(args).items()}


# What a later stage's card keeps of its source's: the data and its split, the first stage's losses and metrics.
CARRIED_CARD_KEYS = ("breeds", "data", "split", "loss_weights", "training_metrics", "recipe")


def next_card(card: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    """The card of a checkpoint a stage made from one with ``card``: the carried keys, and ``stage`` appended to the
    stages (the evaluation is dropped: it was measured on the source)."""
    kept = {k: card[k] for k in CARRIED_CARD_KEYS if k in card}
    return kept | {"stages": [*card.get("stages", []), stage], "git_commit": git_commit()}


def lr_at(step: int, total: int, base: float, warmup: int = 300) -> float:
    """Linear warm-up then cosine decay to 10 % of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def posterior_means(vae: BreedVAE, images: np.ndarray, device: torch.device, batch: int = 512) -> torch.Tensor:
    means = [vae.encode(to_tensor(images[i : i + batch]).to(device))[0].cpu() for i in range(0, len(images), batch)]
    return torch.cat(means)


def settings_grid(assignments: list[str], base: SamplerSettings) -> list[SamplerSettings]:
    """``["guidance=3,4", "eta=1"]`` -> every combination as sampler settings (the others from ``base``).

    Each candidate is checked as it is built, so a bad value is a one-line error before minutes of sampling."""
    axes: dict[str, list[float]] = {}
    for assignment in assignments:
        name, sep, values = assignment.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in SamplerSettings.names():
            raise ValueError(
                f"{assignment!r}: expected NAME=V1,V2,... with NAME one of {', '.join(SamplerSettings.names())}"
            )
        try:
            axes[name] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"{assignment!r}: the values must be comma-separated numbers, e.g. {name}=1,2") from None
        if not axes[name]:
            raise ValueError(f"{assignment!r}: no values")
    grid = []
    for combination in itertools.product(*axes.values()):
        values = dict(zip(axes, combination, strict=True))
        if "steps" in values:
            values["steps"] = int(values["steps"])
        grid.append(SamplerSettings(**(base.to_dict() | values)))
    return grid


RESUME_WEIGHTS = "resume.safetensors"
RESUME_STATE = "resume.json"

# Fitted, not trained: refitted from the posterior means at every epoch's end, so a resumed run needs none of them
# (and a resumed run may change their form, --shared-covariance).
FITTED_BUFFERS = ("prior_mean", "prior_cholesky", "pooled_cholesky")


def save_resume_state(
    out: Path, parts: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], state: dict[str, Any]
) -> None:
    """Weights and optimizer moments as safetensors (by prefix: ``model.``, ``opt.``, ``disc.``, ``disc_opt.``) and
    the counters as JSON: resuming needs no pickle either. The latent Gaussians are left out (``FITTED_BUFFERS``)."""
    tensors = {
        f"{name}.{k}": v.detach().cpu().contiguous()
        for name, m in parts.items()
        for k, v in m.state_dict().items()
        if k not in FITTED_BUFFERS
    }
    for name, optimizer in optimizers.items():
        for pid, slots in optimizer.state_dict()["state"].items():
            for slot, value in slots.items():
                tensors[f"{name}.{pid}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tmp = out / f".{RESUME_WEIGHTS}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, out / RESUME_WEIGHTS)
    checkpoint.atomic_write_json(out / RESUME_STATE, state)


def load_resume_state(
    out: Path, parts: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> dict[str, Any]:
    state = json.loads((out / RESUME_STATE).read_text())
    tensors = load_file(str(out / RESUME_WEIGHTS))
    for name, module in parts.items():
        prefix = f"{name}."
        stored = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        stored = {k: v for k, v in stored.items() if k not in FITTED_BUFFERS}  # older resume states hold them
        missing, unexpected = module.load_state_dict(stored, strict=False)
        if unexpected or set(missing) - set(FITTED_BUFFERS):
            raise SystemExit(f"--resume: the saved {name} does not match (missing {missing}, unexpected {unexpected})")
    for name, optimizer in optimizers.items():
        opt_state = optimizer.state_dict()
        for key, value in tensors.items():
            if key.startswith(f"{name}."):
                _, pid, slot = key.split(".", 2)
                opt_state["state"].setdefault(int(pid), {})[slot] = value
        optimizer.load_state_dict(opt_state)
    return state
