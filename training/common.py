"""Plumbing shared by the training commands: device, threads, provenance, schedules, latents, setting grids."""

from __future__ import annotations

import itertools
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.autoencoder import BreedVAE
from model.sampler import SamplerSettings
from training.data import to_tensor


def resolve_device(device_arg: str) -> torch.device:
    """``auto`` -> cuda when there is a GPU, else cpu; anything else as given."""
    if device_arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device_arg)


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
