"""``python -m training.sampling``: sampling settings chosen against training photos, written into a copy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from model import checkpoint
from training.evaluate import fid_sweep
from training.sampling import main as choose_sampling


def _run(source: Path, data: Path, out: Path, cache_dir: Path, *candidates: str) -> dict:
    return choose_sampling([str(source), "--data", str(data), "--out", str(out), "--fid-samples", "6",
                            "--cache-dir", str(cache_dir), *candidates])


def test_the_setting_with_the_lowest_fid_against_training_photos_is_written(tiny_diffusion_checkpoint: Path, folders_data: Path,
                                                                           cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    selection = _run(tiny_diffusion_checkpoint, folders_data, out, cache_dir, "--guidance", "1,3", "--sampling-steps", "2",
                     "--guidance-max-t", "0.6,1", "--eta", "0,1")
    rows = selection["rows"]
    assert [(r["guidance"], r["sampling_steps"], r["guidance_max_t"], r["eta"]) for r in rows] == [
        (g, 2, t, e) for g in (1.0, 3.0) for t in (0.6, 1.0) for e in (0.0, 1.0)]
    assert {r["reference"] for r in rows} == {"training"}
    best = min(rows, key=lambda r: r["fid_prior_samples"])

    model, card = checkpoint.load(out)
    source, source_card = checkpoint.load(tiny_diffusion_checkpoint)
    cfg = model.cfg
    assert (cfg.diffusion_guidance, cfg.diffusion_sampling_steps, cfg.diffusion_guidance_max_t, cfg.diffusion_eta) == (
        best["guidance"], best["sampling_steps"], best["guidance_max_t"], best["eta"])
    assert selection["before"] == {"diffusion_guidance": 2.0, "diffusion_sampling_steps": 4, "diffusion_guidance_max_t": 1.0,
                                   "diffusion_eta": 0.0}
    assert card["weights_sha256"] == source_card["weights_sha256"]  # only the setting changed
    assert "evaluation" in source_card and "evaluation" not in card  # measured at the old setting
    assert card["sampling_selection"]["chosen"] == selection["chosen"]
    assert card["latent_prior_training"] == source_card["latent_prior_training"]

    # The new checkpoint at its own setting reproduces the chosen row, and the held-out photos give another FID.
    again = fid_sweep(out, folders_data, [1.0], fid_samples=6, cache_dir=cache_dir, reference="training")
    assert math.isclose(again[0]["fid_prior_samples"], best["fid_prior_samples"], rel_tol=1e-6)
    held_out = fid_sweep(out, folders_data, [1.0], fid_samples=6, cache_dir=cache_dir)
    assert held_out[0]["reference"] == "held-out"
    assert not math.isclose(held_out[0]["fid_prior_samples"], best["fid_prior_samples"], rel_tol=1e-6)


def test_a_two_stage_prior_gets_its_residual_scale(tiny_two_stage_checkpoint: Path, folders_data: Path, cache_dir: Path,
                                                   tmp_path: Path) -> None:
    selection = _run(tiny_two_stage_checkpoint, folders_data, tmp_path / "tuned", cache_dir, "--residual-scales", "0,1")
    best = min(selection["rows"], key=lambda r: r["fid_prior_samples"])
    model, _ = checkpoint.load(tmp_path / "tuned")
    assert model.cfg.prior_residual_scale == best["residual_scale"]


@pytest.mark.parametrize("candidates, message", [
    ((), "give the candidates"),
    (("--guidance", "-1"), "must not be negative"),
    (("--sampling-steps", "0"), "must be positive"),
    (("--guidance-max-t", "1.5"), "must lie in [0, 1]"),
    (("--residual-scales", "0.5", "--guidance", "2"), "two-stage prior"),
    (("--eta", "1.5"), "must lie in [0, 1]"),
    (("--residual-scales", "0.5", "--eta", "1"), "two-stage prior"),
])
def test_bad_candidates_are_refused(candidates: tuple[str, ...], message: str, tiny_diffusion_checkpoint: Path,
                                    folders_data: Path, cache_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _run(tiny_diffusion_checkpoint, folders_data, tmp_path / "x", cache_dir, *candidates)
    assert message in capsys.readouterr().err


def test_the_source_is_never_overwritten_and_a_prior_is_required(tiny_diffusion_checkpoint: Path, tiny_checkpoint: Path,
                                                                 folders_data: Path, cache_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _run(tiny_diffusion_checkpoint, folders_data, tiny_diffusion_checkpoint, cache_dir, "--guidance", "1")
    assert "another folder" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no learned prior"):
        _run(tiny_checkpoint, folders_data, tiny_checkpoint.parent / "x", cache_dir, "--guidance", "1")
