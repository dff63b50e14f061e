from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from model import checkpoint, latent_ops
from model.diffusion import DiffusionConfig, LatentDiffusion
from model.sampler import SamplerSettings
from training.losses import distillation_loss


def test_the_student_lands_nearer_the_teacher_than_its_undistilled_copy(
    distilled_checkpoint: Path, tiny_diffusion_checkpoint: Path
) -> None:
    model, card = checkpoint.load(distilled_checkpoint)
    source, _ = checkpoint.load(tiny_diffusion_checkpoint)
    student = card["prior"]["student"]
    assert student["steps"] == 2 and model.sampling.distilled
    assert SamplerSettings.from_dict(student["teacher"]) == replace(source.sampling, steps=4, eta=0.0)
    stage = card["stages"][-1]
    assert stage["command"] == "training.distill" and [e["step"] for e in stage["history"]] == [0, 20, 40, 60]
    distances = [e["distance_to_teacher"] for e in stage["history"]]
    assert min(distances[1:]) < distances[0] and stage["best_step"] > 0
    lines = (distilled_checkpoint / "distill-metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [20, 40, 60]
    assert (distilled_checkpoint / "figures" / "student-vs-teacher.png").is_file()


def test_the_teacher_stays_for_undistilled_sampling(
    distilled_checkpoint: Path, tiny_diffusion_checkpoint: Path
) -> None:
    model, _ = checkpoint.load(distilled_checkpoint)
    source, _ = checkpoint.load(tiny_diffusion_checkpoint)
    teacher = replace(model.sampling, distilled=False)
    before = latent_ops.sample(source, 3, breed=1, seed=5)
    assert torch.equal(latent_ops.sample(model, 3, breed=1, seed=5, sampling=teacher), before)
    assert not torch.equal(latent_ops.sample(model, 3, breed=1, seed=5), before)
    theirs = source.prior.denoiser.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.prior.denoiser.state_dict().items())


class ExactDenoiser(LatentDiffusion):
    """The exact velocity for data that is one point: any number of DDIM steps lands on it."""

    point: torch.Tensor
    offset = 0.0  # added to every prediction: a student that errs

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, breed_weights: torch.Tensor) -> torch.Tensor:
        alpha, sigma = (s[:, None] for s in self.alpha_sigma(t))
        return (alpha * x_t - self.point) / sigma + self.offset


def test_a_student_that_already_matches_the_teacher_has_no_loss() -> None:
    teacher, student = (ExactDenoiser(DiffusionConfig(channels=8, blocks=1), 3, (1, 4, 4)) for _ in range(2))
    teacher.point = student.point = torch.randn(16)
    z, w = teacher.point.expand(32, -1), torch.eye(3)[torch.arange(32) % 3]
    settings = SamplerSettings(steps=8, guidance=3.0, guidance_rescale=0.5)
    assert distillation_loss(student, teacher, z, w, settings, 4).item() < 1e-8
    student.offset = 0.1  # a student that errs does have a loss
    assert distillation_loss(student, teacher, z, w, settings, 4).item() > 1e-3


def test_a_stopped_distillation_resumes_where_the_uninterrupted_run_would_be(
    tmp_path: Path, tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> None:
    from training.distill import main as distill

    args = [
        "--init-from", str(tiny_diffusion_checkpoint), "--data", str(folders_data), "--student-steps", "2",
        "--steps", "12", "--batch-size", "8", "--log-every", "4", "--lr", "1e-3", "--cache-dir", str(cache_dir),
        "--no-progress",
    ]  # fmt: skip
    distill([*args, "--out", str(tmp_path / "whole")])
    distill([*args, "--out", str(tmp_path / "split"), "--stop-after", "4"])
    assert json.loads((tmp_path / "split" / "resume.json").read_text())["step"] == 4
    assert not (tmp_path / "split" / "model.safetensors").exists()  # a stopped run has written no checkpoint yet
    distill([*args, "--out", str(tmp_path / "split"), "--resume"])
    whole, whole_card = checkpoint.load(tmp_path / "whole")
    split, split_card = checkpoint.load(tmp_path / "split")
    theirs = whole.prior.student.denoiser.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in split.prior.student.denoiser.state_dict().items())
    histories = [[e["distance_to_teacher"] for e in card["stages"][-1]["history"]] for card in (whole_card, split_card)]
    assert histories[0] == histories[1] and len(histories[0]) == 4  # step 0, then three checks
    logged = [
        json.loads(line)["step"] for line in (tmp_path / "split" / "distill-metrics.jsonl").read_text().splitlines()
    ]
    assert logged == [4, 8, 12]
    with pytest.raises(SystemExit, match="another run"):
        distill([*args, "--out", str(tmp_path / "split"), "--resume", "--lr", "0.5"])
    with pytest.raises(SystemExit, match="no resume.json"):
        distill([*args, "--out", str(tmp_path / "fresh"), "--resume"])
