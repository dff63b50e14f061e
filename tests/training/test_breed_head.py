"""python -m training.breed_head: a new breed head, trained alone at 128 px, in an otherwise unchanged checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model import checkpoint, latent_ops
from training.breed_head import main as train_head
from training.breed_head import random_resized_crops


def head_args(source: Path, data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "--init-from",
        str(source),
        "--data",
        str(data),
        "--out",
        str(out),
        "--channels",
        "8,16",
        "--batch-size",
        "8",
        "--cache-dir",
        str(cache),
        "--no-progress",
        *extra,
    ]


def test_the_new_head_reads_128_px_photos_and_nothing_else_changes(
    tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = train_head(head_args(tiny_diffusion_checkpoint, folders_data, tmp_path / "head", cache_dir, "--epochs", "2"))
    new, card = checkpoint.load(out)
    old, old_card = checkpoint.load(tiny_diffusion_checkpoint)
    assert new.vae.cfg.classifier_image_size == 128 and new.vae.cfg.classifier_channels == (8, 16)
    assert new.vae.cfg.photo_size == 128 and new.vae.cfg.image_size == 64
    for name, value in old.state_dict().items():  # the autoencoder, its Gaussians and the prior: the same weights
        if not name.startswith("vae.breed_head.") and not name.startswith("breed_head."):
            assert torch.equal(value, new.state_dict()[name]), name
    assert card["split"] == old_card["split"] and card["sampling"] == old_card["sampling"]
    assert card["stages"][-1]["command"] == "training.breed_head"
    assert [e["epoch"] for e in card["stages"][-1]["history"]] == [1, 2]
    assert "evaluation" not in card  # the old head's numbers do not describe the new one
    # Photos of any side work: the encoder reads 64 px, the head 128 px.
    photo = torch.rand(2, 3, 128, 128)
    probabilities = latent_ops.breed_probabilities(new, photo)
    assert probabilities.shape == (2, 3) and torch.allclose(probabilities.sum(1), torch.ones(2))
    assert torch.allclose(latent_ops.encode(new, photo).mean, latent_ops.encode(old, photo).mean)


def test_a_stopped_run_resumes_at_its_next_epoch(
    tiny_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "head"
    train_head(head_args(tiny_checkpoint, folders_data, out, cache_dir, "--epochs", "2", "--stop-after", "1"))
    assert [json.loads(line)["epoch"] for line in (out / "breed-head-metrics.jsonl").read_text().splitlines()] == [1]
    train_head(head_args(tiny_checkpoint, folders_data, out, cache_dir, "--epochs", "2", "--resume"))
    history = [json.loads(line)["epoch"] for line in (out / "breed-head-metrics.jsonl").read_text().splitlines()]
    assert history == [1, 2]
    with pytest.raises(SystemExit, match="another head"):
        train_head(
            head_args(tiny_checkpoint, folders_data, out, cache_dir, "--epochs", "2", "--resume", "--dropout", "0.1")
        )


def test_random_resized_crops_keep_the_side_and_vary() -> None:
    batch = torch.rand(6, 3, 32, 32)
    crops = random_resized_crops(batch, torch.Generator().manual_seed(0), 0.35)
    assert crops.shape == batch.shape and not torch.equal(crops, batch)
    assert torch.equal(random_resized_crops(batch, torch.Generator().manual_seed(0), 1.0)[0:0], batch[0:0])


def test_the_service_identifies_with_a_128_px_head(
    tiny_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import Settings, get_settings
    from app.main import create_app
    from tests.app.conftest import image_bytes

    out = train_head(head_args(tiny_checkpoint, folders_data, tmp_path / "head", cache_dir, "--epochs", "1"))
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: Settings(checkpoint=out, device="cpu")
    with TestClient(app) as client:
        photo = {"file": ("dog.png", image_bytes(size=(300, 200)), "image/png")}
        found = client.post("/identify", files=photo)
        assert found.status_code == 200 and len(found.json()["breeds"]) == 3
        assert client.post("/encode", files=photo).status_code == 200
