"""``python -m training.sampling``: sampling settings chosen against training photos, written into a copy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

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
                                   "diffusion_eta": 0.0, "diffusion_autoguidance": 1.0, "diffusion_guidance_rescale": 0.0,
                                   "diffusion_discriminator_guidance": 0.0, "diffusion_output_scale": 1.0}
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


def test_a_guidance_rescale_is_chosen_and_stored(tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "rescaled"
    rows = _run(tiny_diffusion_checkpoint, folders_data, out, cache_dir, "--guidance", "3", "--guidance-rescale", "0,1")["rows"]
    assert [(r["guidance"], r["guidance_rescale"]) for r in rows] == [(3.0, 0.0), (3.0, 1.0)]
    assert rows[0]["fid_prior_samples"] != rows[1]["fid_prior_samples"]
    best = min(rows, key=lambda r: r["fid_prior_samples"])
    assert checkpoint.load(out)[0].cfg.diffusion_guidance_rescale == best["guidance_rescale"]
    again = fid_sweep(out, folders_data, [1.0], fid_samples=6, cache_dir=cache_dir, reference="training")
    assert math.isclose(again[0]["fid_prior_samples"], best["fid_prior_samples"], rel_tol=1e-6)


def test_an_output_scale_is_chosen_and_stored(tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path,
                                             tmp_path: Path) -> None:
    out = tmp_path / "scaled"
    rows = _run(tiny_diffusion_checkpoint, folders_data, out, cache_dir, "--output-scale", "0.5,1")["rows"]
    assert [r["output_scale"] for r in rows] == [0.5, 1.0]
    assert rows[0]["fid_prior_samples"] != rows[1]["fid_prior_samples"]
    best = min(rows, key=lambda r: r["fid_prior_samples"])
    assert checkpoint.load(out)[0].cfg.diffusion_output_scale == best["output_scale"]


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
    (("--autoguidance", "0.5"), "at least 1"),
    (("--autoguidance", "2"), "no autoguidance guide"),
    (("--autoguidance", "inf"), "finite number"),
    (("--guidance", "3,nan"), "finite number"),
    (("--eta", "one"), "comma-separated numbers"),
    (("--guidance-rescale", "1.5"), "must lie in [0, 1]"),
    (("--residual-scales", "0.5", "--guidance-rescale", "0.5"), "two-stage prior"),
    (("--output-scale", "0"), "must lie in (0, 2]"),
    (("--output-scale", "2.5"), "must lie in (0, 2]"),
])
def test_bad_candidates_are_refused(candidates: tuple[str, ...], message: str, tiny_diffusion_checkpoint: Path,
                                    folders_data: Path, cache_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        _run(tiny_diffusion_checkpoint, folders_data, tmp_path / "x", cache_dir, *candidates)
    assert message in capsys.readouterr().err + str(stopped.value.code)


def test_the_source_is_never_overwritten_and_a_prior_is_required(tiny_diffusion_checkpoint: Path, tiny_checkpoint: Path,
                                                                 folders_data: Path, cache_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _run(tiny_diffusion_checkpoint, folders_data, tiny_diffusion_checkpoint, cache_dir, "--guidance", "1")
    assert "another folder" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no learned prior"):
        _run(tiny_checkpoint, folders_data, tiny_checkpoint.parent / "x", cache_dir, "--guidance", "1")


def _train_guide(source: Path, data: Path, out: Path, cache_dir: Path, *extra: str) -> Path:
    from training.prior import main as fit_prior

    fit_prior(["--init-from", str(source), "--data", str(data), "--out", str(out), "--kind", "diffusion", "--steps", "20",
               "--batch-size", "16", "--diffusion-channels", "8", "--diffusion-blocks", "1", "--sampling-steps", "4",
               "--log-every", "10", "--cache-dir", str(cache_dir), "--no-progress", *extra])
    return out


def test_an_autoguidance_guide_is_attached_weighed_and_written(tiny_diffusion_checkpoint: Path, tiny_checkpoint: Path,
                                                               folders_data: Path, cache_dir: Path, tmp_path: Path) -> None:
    """A smaller prior trained on the same stage 1 becomes the guide; the written checkpoint carries its weights and
    reproduces the chosen row; a new prior trained from it drops the guide (it was weighed against the old prior)."""
    guide = _train_guide(tiny_checkpoint, folders_data, tmp_path / "guide", cache_dir)
    out = tmp_path / "guided"
    selection = _run(tiny_diffusion_checkpoint, folders_data, out, cache_dir, "--guide-from", str(guide),
                     "--autoguidance", "1,3")
    rows = selection["rows"]
    assert [r["autoguidance"] for r in rows] == [1.0, 3.0]
    assert rows[0]["fid_prior_samples"] != rows[1]["fid_prior_samples"]  # weight 3 moves the samples
    best = min(rows, key=lambda r: r["fid_prior_samples"])

    model, card = checkpoint.load(out)
    guide_model, _ = checkpoint.load(guide)
    assert model.cfg.diffusion_autoguidance == best["autoguidance"] and model.cfg.diffusion_guide_channels == 8
    assert model.guide_prior is not None and guide_model.latent_prior is not None
    for name, weight in guide_model.latent_prior.state_dict().items():
        assert torch.equal(model.guide_prior.state_dict()[name], weight)
    assert card["sampling_selection"]["guide_from"] == str(guide)
    assert card["sampling_selection"]["guide_prior_training"]["args"]["diffusion_channels"] == 8  # how the guide was made
    again = fid_sweep(out, folders_data, [1.0], fid_samples=6, cache_dir=cache_dir, reference="training")
    assert math.isclose(again[0]["fid_prior_samples"], best["fid_prior_samples"], rel_tol=1e-6)

    # Choosing again on the guided checkpoint keeps the guide and the record of where it came from.
    _run(out, folders_data, tmp_path / "again", cache_dir, "--guidance", "3")
    model, card = checkpoint.load(tmp_path / "again")
    assert model.guide_prior is not None and card["sampling_selection"]["guide_from"] is None
    assert [s["guide_from"] for s in card["earlier_sampling_selections"]] == [str(guide)]

    retrained = _train_guide(out, folders_data, tmp_path / "retrained", cache_dir)
    model, _ = checkpoint.load(retrained)
    assert model.guide_prior is None and model.cfg.diffusion_autoguidance == 1.0


def test_a_guide_must_share_stage_1_and_the_standardisation(tiny_diffusion_checkpoint: Path, tiny_checkpoint: Path,
                                                            tiny_two_stage_checkpoint: Path, folders_data: Path,
                                                            cache_dir: Path, tmp_path: Path) -> None:
    model, _ = checkpoint.load(tiny_diffusion_checkpoint)
    with pytest.raises(checkpoint.CheckpointError, match="no diffusion prior"):
        checkpoint.attach_guide(model, tiny_two_stage_checkpoint)
    unmirrored = _train_guide(tiny_checkpoint, folders_data, tmp_path / "unmirrored", cache_dir, "--no-flip")
    with pytest.raises(checkpoint.CheckpointError, match="standardises the latents differently"):
        checkpoint.attach_guide(model, unmirrored)
    other, other_card = checkpoint.load(_train_guide(tiny_checkpoint, folders_data, tmp_path / "guide", cache_dir))
    with torch.no_grad():
        next(other.decoder.parameters()).add_(0.01)
    checkpoint.save(other, {k: v for k, v in other_card.items() if k not in ("config", "weights_sha256")}, tmp_path / "other")
    with pytest.raises(checkpoint.CheckpointError, match="another stage 1"):
        checkpoint.attach_guide(model, tmp_path / "other")
    with pytest.raises(SystemExit, match="another stage 1"):
        _run(tiny_diffusion_checkpoint, folders_data, tmp_path / "x", cache_dir, "--guide-from", str(tmp_path / "other"))
    assert model.guide_prior is None and model.cfg.diffusion_guide_channels == 0  # a refused guide leaves the model as it was
