"""``python -m training.discriminator``: a classifier of real against sampled latents, written into a copy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from model import checkpoint, latent_ops
from training.discriminator import TIME_BANDS
from training.discriminator import main as train_discriminator
from training.evaluate import fid_sweep
from training.sampling import main as choose_sampling


def _train(source: Path, data: Path, out: Path, cache_dir: Path, *extra: str) -> Path:
    return train_discriminator([str(source), "--data", str(data), "--out", str(out), "--fake-latents", "128",
                                "--channels", "8", "--blocks", "1", "--steps", "30", "--batch-size", "32",
                                "--log-every", "10", "--cache-dir", str(cache_dir), "--no-progress", *extra])


@pytest.fixture(scope="module")
def discriminated(tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tiny_diffusion_checkpoint, folders_data, tmp_path_factory.mktemp("discriminated"), cache_dir)


def test_the_copy_carries_the_discriminator_unused_and_the_source_weights(discriminated: Path,
                                                                          tiny_diffusion_checkpoint: Path) -> None:
    model, card = checkpoint.load(discriminated)
    source, source_card = checkpoint.load(tiny_diffusion_checkpoint)
    assert model.latent_discriminator is not None
    assert (model.cfg.diffusion_discriminator_channels, model.cfg.diffusion_discriminator_blocks) == (8, 1)
    assert model.cfg.diffusion_discriminator_guidance == 0.0
    ours = model.state_dict()
    for name, weight in source.state_dict().items():
        assert torch.equal(ours[name], weight), name
    assert "evaluation" in source_card and "evaluation" not in card
    training = card["discriminator_training"]
    assert training["source"] == str(tiny_diffusion_checkpoint) and training["sampled_latents"] > 0
    assert 1 <= training["best_step"] <= 30

    # Weight 0: the discriminator is not consulted, so the samples are the source's to the bit.
    w = latent_ops.one_hot(model, torch.tensor([0, 1, 2]))
    eps = latent_ops.noise(3, latent_ops.noise_dim(model), seed=3)
    assert torch.equal(latent_ops.prior_latents(model, w, eps), latent_ops.prior_latents(source, w, eps))


def test_its_log_scores_every_check_in_time_bands(discriminated: Path) -> None:
    lines = [json.loads(line) for line in (discriminated / "discriminator-metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == [10, 20, 30]
    for entry in lines:
        assert math.isfinite(entry["stop_bce"]) and math.isfinite(entry["train_bce"])
        for lo, hi in TIME_BANDS:
            assert 0.0 <= entry[f"stop_accuracy_t{lo:g}-{hi:g}"] <= 1.0


def test_a_weight_is_chosen_by_fid_and_moves_the_samples(discriminated: Path, folders_data: Path, cache_dir: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "chosen"
    selection = choose_sampling([str(discriminated), "--data", str(folders_data), "--out", str(out), "--fid-samples", "6",
                                 "--cache-dir", str(cache_dir), "--discriminator-guidance", "0,20"])
    rows = selection["rows"]
    assert [r["discriminator_guidance"] for r in rows] == [0.0, 20.0]
    assert rows[0]["fid_prior_samples"] != rows[1]["fid_prior_samples"]
    best = min(rows, key=lambda r: r["fid_prior_samples"])
    model, card = checkpoint.load(out)
    assert model.cfg.diffusion_discriminator_guidance == best["discriminator_guidance"]
    assert card["discriminator_training"]["best_step"] >= 1  # how the discriminator was made stays on the card
    again = fid_sweep(out, folders_data, [1.0], fid_samples=6, cache_dir=cache_dir, reference="training")
    assert math.isclose(again[0]["fid_prior_samples"], best["fid_prior_samples"], rel_tol=1e-6)


def test_a_new_prior_drops_the_discriminator(discriminated: Path, folders_data: Path, cache_dir: Path, tmp_path: Path) -> None:
    from training.prior import main as fit_prior

    fit_prior(["--init-from", str(discriminated), "--data", str(folders_data), "--out", str(tmp_path / "prior"),
               "--kind", "diffusion", "--steps", "10", "--batch-size", "16", "--diffusion-channels", "8",
               "--diffusion-blocks", "1", "--sampling-steps", "4", "--log-every", "10", "--cache-dir", str(cache_dir),
               "--no-progress"])
    model, _ = checkpoint.load(tmp_path / "prior")
    assert model.latent_discriminator is None and model.cfg.diffusion_discriminator_guidance == 0.0


def test_a_guide_can_still_be_attached_to_a_checkpoint_with_a_discriminator(discriminated: Path,
                                                                            tiny_diffusion_checkpoint: Path) -> None:
    model, _ = checkpoint.load(discriminated)
    checkpoint.attach_guide(model, tiny_diffusion_checkpoint)  # its stage 1 is the same; the discriminator is no stage-1 weight
    assert model.guide_prior is not None


def test_no_discriminator_no_weight(tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="no latent discriminator"):
        choose_sampling([str(tiny_diffusion_checkpoint), "--data", str(folders_data), "--out", str(tmp_path / "x"),
                         "--fid-samples", "6", "--cache-dir", str(cache_dir), "--discriminator-guidance", "1"])
    with pytest.raises(SystemExit):
        choose_sampling([str(tiny_diffusion_checkpoint), "--data", str(folders_data), "--out", str(tmp_path / "x"),
                         "--discriminator-guidance", "-1"])
    assert "must not be negative" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (("--fake-latents", "10"), "at least 100"),
    (("--steps", "0"), "must be positive"),
    (("--stop-fraction", "1"), "between 0 and 1"),
    (("--patience", "-1"), "must not be negative"),
])
def test_bad_arguments_are_refused(extra: tuple[str, ...], message: str, tiny_diffusion_checkpoint: Path, folders_data: Path,
                                   cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _train(tiny_diffusion_checkpoint, folders_data, tmp_path / "x", cache_dir, *extra)
    assert message in capsys.readouterr().err


def test_it_needs_a_diffusion_prior_and_another_folder(tiny_two_stage_checkpoint: Path, tiny_diffusion_checkpoint: Path,
                                                       folders_data: Path, cache_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="no diffusion prior"):
        _train(tiny_two_stage_checkpoint, folders_data, tmp_path / "x", cache_dir)
    with pytest.raises(SystemExit):
        _train(tiny_diffusion_checkpoint, folders_data, tiny_diffusion_checkpoint, cache_dir)
    assert "another folder" in capsys.readouterr().err
