from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from model import checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_no_half_written_files_are_left_behind(tiny_checkpoint: Path) -> None:
    assert not [p for p in tiny_checkpoint.iterdir() if p.name.endswith(".tmp")]
    for name in (checkpoint.WEIGHTS_FILE, checkpoint.CARD_FILE):  # readable by a non-root service user
        assert (tiny_checkpoint / name).stat().st_mode & 0o777 == 0o644


def test_corrupt_or_old_checkpoints_are_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    for name in (checkpoint.CARD_FILE, checkpoint.WEIGHTS_FILE):
        (tmp_path / name).write_bytes((tiny_checkpoint / name).read_bytes())
    card = json.loads((tmp_path / checkpoint.CARD_FILE).read_text())
    (tmp_path / checkpoint.CARD_FILE).write_text(json.dumps(card | {"format": "vae-dogs/1"}))
    with pytest.raises(checkpoint.CheckpointError, match="has format 'vae-dogs/1', expected 'vae-dogs/2'"):
        checkpoint.load(tmp_path)
    (tmp_path / checkpoint.CARD_FILE).write_text(json.dumps(card))
    with open(tmp_path / checkpoint.WEIGHTS_FILE, "r+b") as f:
        f.seek(-10, os.SEEK_END)
        f.write(b"\0" * 10)
    with pytest.raises(checkpoint.CheckpointError, match="do not match the SHA-256"):
        checkpoint.load(tmp_path)
    (tmp_path / checkpoint.CARD_FILE).write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="not valid JSON"):
        checkpoint.load(tmp_path)


def test_save_and_load_keep_every_weight(tiny_diffusion_checkpoint: Path, tmp_path: Path) -> None:
    model, card = checkpoint.load(tiny_diffusion_checkpoint)
    checkpoint.save(model, {k: v for k, v in card.items() if k != "weights_sha256"}, tmp_path)
    again, again_card = checkpoint.load(tmp_path)
    assert again_card["weights_sha256"] == card["weights_sha256"]  # the same bytes
    assert again.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


def test_the_committed_default_loads_as_described() -> None:
    model, card = checkpoint.load(ROOT / "checkpoints" / "dogs120")
    assert model.prior.kind == "diffusion" and model.prior.guide is not None
    assert model.sampling.to_dict() == {"distilled": False, **card["sampling"]}  # cards before the student lack it
    assert card["recipe"] == "recipes/dogs120.toml" and (ROOT / card["recipe"]).is_file()
    assert model.identifier is not None and card["identifier"]["image_size"] == 224 == model.photo_size


def test_the_denoisers_are_stored_in_half_precision_and_run_in_full(tiny_diffusion_checkpoint: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_diffusion_checkpoint / checkpoint.WEIGHTS_FILE), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    denoiser = [k for k in dtypes if k.startswith(checkpoint.HALF_PRECISION_PREFIXES)]
    assert denoiser and all(dtypes[k] == "F16" for k in denoiser if "weight" in k)
    assert all(dtypes[k] == "F32" for k in dtypes if k.startswith("encoder."))  # the VAE keeps full precision
    model, _ = checkpoint.load(tiny_diffusion_checkpoint)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())
