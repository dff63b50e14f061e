"""python -m training.identifier: a calibrated breed head on the pretrained trunk, ImageNet-validation photos kept
out of its training, and the service answering with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from model import checkpoint
from training.identifier import calibration_error, calibration_ids, fit_temperature, served_probabilities
from training.identifier import main as train_identifier


def test_the_identifier_checkpoint_keeps_everything_else(
    identifier_checkpoint: Path, tiny_diffusion_checkpoint: Path
) -> None:
    model, card = checkpoint.load(identifier_checkpoint)
    source, _ = checkpoint.load(tiny_diffusion_checkpoint)
    assert card["identifier"]["image_size"] == 64 and card["stages"][-1]["command"] == "training.identifier"
    assert all(
        torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items() if k in source.state_dict()
    )
    added = set(model.state_dict()) - set(source.state_dict())
    space = {f"identifier_breed_space.{k}" for k in ("center", "projection", "breed_mean", "breed_covariance")}
    assert added == {"identifier_head.weight", "identifier_head.bias"} | space
    assert model.identifier.breed_space.dim == card["identifier"]["embedding_dim"] == 64
    metrics = card["stages"][-1]["metrics"]
    assert metrics["temperature"] > 0 and metrics["held_out"]["photos"] == len(card["split"]["validation_ids"])
    evaluation = card["evaluation"]
    for key in ("identify_top1", "identify_ece", "identify_vae_head_top1", "generated_breed_top1_vae_head"):
        assert 0 <= evaluation[key] <= 1
    # Ancestry as served (by the identifier) and by the latent beside it, on its own mixes and on held-out photos.
    assert evaluation["ancestry_by"] == "identifier"
    for key in ("ancestry_recovery_top1", "ancestry_photos_top1"):
        assert 0 <= evaluation[key] <= 1 and 0 <= evaluation[f"{key}_latent"] <= 1
    assert evaluation["not_dog_images"] >= 4 and (identifier_checkpoint / "eval" / "reliability.png").is_file()


def test_imagenet_validation_photos_never_train_the_head(
    tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Training photos renamed to ImageNet-validation ids are reported apart and kept out of the head's training."""
    data = tmp_path / "data"
    shutil.copytree(folders_data, data)
    held_out = set(checkpoint.read_card(tiny_diffusion_checkpoint)["split"]["validation_ids"])
    renamed = 0
    for breed_folder in sorted((data / "images").iterdir()):
        for photo in [p for p in sorted(breed_folder.iterdir()) if p.stem not in held_out][:3]:
            photo.rename(photo.with_name(f"ILSVRC2012_val_{renamed:08d}.jpg"))
            renamed += 1
    out = tmp_path / "identifier"
    train_identifier(
        [
            "--init-from", str(tiny_diffusion_checkpoint), "--data", str(data), "--out", str(out),
            "--resolution", "48", "--views", "2", "--epochs", "2", "--calibration-share", "0.2",
            "--cache-dir", str(cache_dir), "--no-progress",
        ]
    )  # fmt: skip
    metrics = json.loads((out / "identifier-metrics.json").read_text())
    card = checkpoint.read_card(tiny_diffusion_checkpoint)
    n_photos = sum(1 for _ in (data / "images").rglob("*.jpg"))
    assert metrics["imagenet_val"]["photos"] == renamed > 0
    calibration = metrics["calibration_photos"]
    assert (
        calibration >= 3
        and metrics["training_photos"] == n_photos - len(card["split"]["validation_ids"]) - calibration - renamed
    )
    # The evaluation asks the served ancestry about the same photos apart (never seen by the trunk or breed space).
    from training.evaluate import evaluate

    evaluation = evaluate(out, data, tmp_path / "eval", fid_samples=0, cache_dir=cache_dir, update_card=False)
    assert evaluation["ancestry_by"] == "identifier" and 0 <= evaluation["ancestry_imagenet_val_top1"] <= 1


def test_the_calibration_photos_are_the_same_share_of_every_breed() -> None:
    breed_of = {f"a{i}": "a" for i in range(100)} | {f"b{i}": "b" for i in range(10)}
    chosen = calibration_ids(list(breed_of), breed_of, 0.1, seed=0)
    assert sum(i.startswith("a") for i in chosen) == 10 and sum(i.startswith("b") for i in chosen) == 1
    assert (
        chosen
        == calibration_ids(list(breed_of), breed_of, 0.1, seed=0)
        != calibration_ids(list(breed_of), breed_of, 0.1, 1)
    )


def test_temperature_scaling_undoes_overconfidence() -> None:
    generator = torch.Generator().manual_seed(0)
    true_logits = 2 * torch.randn(4000, 10, generator=generator)
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=generator)[:, 0]  # calibrated by construction
    overconfident = [3 * true_logits]
    assert calibration_error(served_probabilities(overconfident, 1.0), labels)["ece"] > 0.1
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3, rel=0.1)
    assert calibration_error(served_probabilities(overconfident, temperature), labels)["ece"] < 0.03


def test_the_service_says_when_a_photo_does_not_look_like_a_dog(identifier_checkpoint: Path, tmp_path: Path) -> None:
    from app.core.config import Settings, get_settings
    from app.main import create_app
    from tests.app.conftest import image_bytes

    for threshold, is_dog in ((0.0, True), (1.0, False)):
        folder = tmp_path / str(threshold)
        shutil.copytree(identifier_checkpoint, folder)
        card = json.loads((folder / checkpoint.CARD_FILE).read_text())
        card["identifier"]["dog_threshold"] = threshold
        (folder / checkpoint.CARD_FILE).write_text(json.dumps(card))
        app = create_app()
        app.dependency_overrides[get_settings] = lambda folder=folder: Settings(checkpoint=folder, device="cpu")
        with TestClient(app) as client:
            photo = {"file": ("grey.png", image_bytes(size=(90, 70)), "image/png")}
            answer = client.post("/identify?top_k=2", files=photo).json()
            assert answer["looks_like_a_dog"] is is_dog and 0 <= answer["dog_probability"] <= 1
            assert (answer["note"] is None) is is_dog and len(answer["breeds"]) == 2
            ancestry = client.post("/ancestry?max_breeds=2", files=photo).json()
            assert ancestry["looks_like_a_dog"] is is_dog and ancestry["dog_probability"] == answer["dog_probability"]
