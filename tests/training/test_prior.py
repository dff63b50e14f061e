from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from model import checkpoint, latent_ops
from training.prior import WeightAverage
from training.prior import main as fit_prior


def prior_args(source: Path, data: Path, cache: Path, steps: int = 10) -> list[str]:
    return [
        "--init-from",
        str(source),
        "--data",
        str(data),
        "--steps",
        str(steps),
        "--batch-size",
        "16",
        "--channels",
        "16",
        "--blocks",
        "1",
        "--log-every",
        "5",
        "--cache-dir",
        str(cache),
        "--no-progress",
    ]


def test_the_prior_stage_fits_a_diffusion_prior(tiny_diffusion_checkpoint: Path, tiny_checkpoint: Path) -> None:
    model, card = checkpoint.load(tiny_diffusion_checkpoint)
    assert model.prior.kind == "diffusion" and model.sampling.steps == 4
    assert card["prior"] == {
        "kind": "diffusion",
        "config": {"channels": 16, "blocks": 1, "attention": False, "patch": 1},
        "guide": None,
    }
    source, _ = checkpoint.load(tiny_checkpoint)
    assert all(torch.equal(model.vae.state_dict()[k], v) for k, v in source.vae.state_dict().items())  # VAE unchanged
    prior_stage = card["stages"][1]
    assert [s["command"] for s in card["stages"]] == ["training", "training.prior", "training.sampling"]
    assert [e["step"] for e in prior_stage["history"]] == [20, 40]
    assert all(math.isfinite(e["stop_denoising_mse"] + e["val_denoising_mse"]) for e in prior_stage["history"])
    assert prior_stage["args"]["ema"] == 0.999 and prior_stage["best_step"] in (20, 40)
    # The starting noise is one latent's worth, and a seed fixes the dog for every mix.
    dim = model.vae.cfg.latent_dim
    assert latent_ops.noise_dim(model) == dim
    z, _ = latent_ops.mix_latents(model, torch.tensor([0.5, 0.5, 0.0]), n=2, seed=7)
    assert z.shape == (2, dim) and torch.equal(
        z, latent_ops.mix_latents(model, torch.tensor([1.0, 1.0, 0.0]), n=2, seed=7)[0]
    )
    assert not torch.equal(z, latent_ops.mix_latents(model, torch.tensor([1.0, 0.0, 0.0]), n=2, seed=7)[0])


def test_mirrored_latents_double_the_training_set(
    tmp_path: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit_prior([*prior_args(tiny_checkpoint, folders_data, cache_dir, 5), "--out", str(tmp_path / "a"), "--no-flip"])
    fit_prior([*prior_args(tiny_checkpoint, folders_data, cache_dir, 5), "--out", str(tmp_path / "b")])
    counts = [int(line.split()[0]) for line in capsys.readouterr().out.splitlines() if "training /" in line]
    assert counts[1] == 2 * counts[0]
    assert (tmp_path / "b" / "figures" / "samples-prior.png").is_file()


def test_the_prior_stage_refuses_other_data(tmp_path: Path, tiny_checkpoint: Path, cache_dir: Path) -> None:
    from tests.conftest import write_kaggle

    data = write_kaggle(tmp_path / "kaggle")
    with pytest.raises(SystemExit, match="held-out photos"):
        fit_prior([*prior_args(tiny_checkpoint, data, cache_dir, 2), "--out", str(tmp_path / "p")])


def test_the_prior_stage_stops_when_the_early_stopping_error_stalls(
    tmp_path: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> None:
    out = tmp_path / "patient"
    # A zero learning rate never improves on the first check, so the run stops after 1 + patience checks.
    fit_prior(
        [*prior_args(tiny_checkpoint, folders_data, cache_dir, 100), "--out", str(out), "--lr", "0", "--patience", "2"]
    )
    logged = [json.loads(line)["step"] for line in (out / "prior-metrics.jsonl").read_text().splitlines()]
    assert logged == [5, 10, 15]
    assert checkpoint.read_card(out)["stages"][-1]["best_step"] == 5


def test_prior_from_carries_a_trained_prior_on(
    tmp_path: Path, tiny_diffusion_checkpoint: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> None:
    args = [*prior_args(tiny_checkpoint, folders_data, cache_dir), "--prior-from", str(tiny_diffusion_checkpoint)]
    out = tmp_path / "carried"
    fit_prior([*args, "--out", str(out), "--lr", "0", "--ema", "0"])  # no learning: the prior comes back as it went in
    carried, _ = checkpoint.load(out)
    source, _ = checkpoint.load(tiny_diffusion_checkpoint)
    assert carried.sampling == source.sampling
    theirs = source.prior.denoiser.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in carried.prior.denoiser.state_dict().items())
    with pytest.raises(SystemExit, match="no diffusion prior of this architecture"):
        fit_prior([*args, "--out", str(tmp_path / "wider"), "--channels", "24"])


def test_a_stopped_prior_resumes_where_the_uninterrupted_run_would_be(
    tmp_path: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> None:
    args = prior_args(tiny_checkpoint, folders_data, cache_dir, 15)
    fit_prior([*args, "--out", str(tmp_path / "whole")])
    fit_prior([*args, "--out", str(tmp_path / "split"), "--stop-after", "5"])
    assert json.loads((tmp_path / "split" / "resume.json").read_text())["step"] == 5
    fit_prior([*args, "--out", str(tmp_path / "split"), "--resume"])
    whole, whole_card = checkpoint.load(tmp_path / "whole")
    split, split_card = checkpoint.load(tmp_path / "split")
    theirs = whole.prior.denoiser.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in split.prior.denoiser.state_dict().items())
    errors = [[e["stop_denoising_mse"] for e in card["stages"][-1]["history"]] for card in (whole_card, split_card)]
    assert errors[0] == errors[1] and len(errors[0]) == 3
    metrics = (tmp_path / "split" / "prior-metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line)["step"] for line in metrics]
    assert logged == [5, 10, 15]
    with pytest.raises(SystemExit, match="another run"):
        fit_prior([*args, "--out", str(tmp_path / "split"), "--resume", "--lr", "0.5"])
    with pytest.raises(SystemExit, match="no resume.json"):
        fit_prior([*args, "--out", str(tmp_path / "fresh"), "--resume"])


def test_weight_average_follows_the_weights_with_a_lag() -> None:
    layer = torch.nn.Linear(2, 2)
    average = WeightAverage(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    for _ in range(200):
        average.update(layer)
    assert torch.allclose(average.state["weight"], torch.ones(2, 2), atol=1e-4)
    with torch.no_grad():
        layer.weight.fill_(3.0)
    average.update(layer)
    assert torch.allclose(average.state["weight"], torch.full((2, 2), 1.2))  # a tenth of the way, at decay 0.9
    assert torch.equal(layer.weight, torch.full((2, 2), 3.0))  # the module itself is left alone
