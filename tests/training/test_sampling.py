"""``python -m training.sampling``: sampler settings chosen against training photos, written into a copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import checkpoint
from training.sampling import main as choose_sampling


def choose(source: Path, data: Path, out: Path, cache_dir: Path, *flags: str) -> dict:
    return choose_sampling(
        [
            str(source),
            "--data",
            str(data),
            "--out",
            str(out),
            "--samples",
            "6",
            "--cache-dir",
            str(cache_dir),
            *flags,
        ]
    )


def test_the_setting_nearest_the_training_photos_in_the_breed_heads_features_is_written(
    tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tuned"
    stage = choose(
        tiny_diffusion_checkpoint, folders_data, out, cache_dir, "--set", "guidance=1,3", "steps=2", "eta=0,1"
    )
    rows = stage["rows"]
    assert [(r["sampling"]["guidance"], r["sampling"]["steps"], r["sampling"]["eta"]) for r in rows] == [
        (g, 2, e) for g in (1.0, 3.0) for e in (0.0, 1.0)
    ]
    assert {r["reference"] for r in rows} == {"training"}
    assert all(r["fd_breed_head"] >= 0 and 0 <= r["generated_breed_top1_vae_head"] <= 1 for r in rows)
    assert not any("fid_prior_samples" in r for r in rows)  # no ImageNet network scores generated dogs here
    best = min(rows, key=lambda r: r["fd_breed_head"])
    model, card = checkpoint.load(out)
    source, source_card = checkpoint.load(tiny_diffusion_checkpoint)
    assert model.sampling.to_dict() == best["sampling"] == stage["chosen"]
    assert stage["before"] == source.sampling.to_dict()
    assert card["weights_sha256"] == source_card["weights_sha256"]  # only the settings changed
    assert "evaluation" in source_card and "evaluation" not in card  # measured at the old settings
    assert card["stages"][:-1] == source_card["stages"] and card["stages"][-1]["rows"] == rows


def test_the_frechet_distance_is_zero_for_one_distribution_and_grows_with_a_shift() -> None:
    from training.fid import frechet_distance

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 8))
    stats = {"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)}
    assert abs(frechet_distance(stats, stats)) < 1e-6
    shifted = {"mu": stats["mu"] + 2.0, "sigma": stats["sigma"]}
    assert frechet_distance(stats, shifted) == pytest.approx(8 * 4.0, rel=1e-6)  # |shift|^2, covariances equal
    wider = {"mu": stats["mu"], "sigma": 4 * stats["sigma"]}
    assert frechet_distance(stats, wider) == pytest.approx(np.trace(stats["sigma"]), rel=1e-4)  # (1 - 2)^2 tr(S)


def test_one_candidate_is_written_as_given_without_measuring(tiny_diffusion_checkpoint: Path, tmp_path: Path) -> None:
    stage = choose_sampling(
        [str(tiny_diffusion_checkpoint), "--out", str(tmp_path / "set"), "--set", "output_scale=0.9"]
    )
    assert stage["rows"] == [] and stage["chosen"]["output_scale"] == 0.9
    assert checkpoint.load(tmp_path / "set")[0].sampling.output_scale == 0.9


def test_candidates_for_a_distilled_checkpoint_must_name_the_teacher(
    distilled_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit, match="add distilled=0"):
        choose(distilled_checkpoint, folders_data, tmp_path / "x", cache_dir, "--set", "guidance=2,3")
    assert not (tmp_path / "x").exists()


def test_the_breed_identifier_survives_a_new_sampler(identifier_checkpoint: Path, tmp_path: Path) -> None:
    choose_sampling([str(identifier_checkpoint), "--out", str(tmp_path / "set"), "--set", "output_scale=0.9"])
    model, _ = checkpoint.load(tmp_path / "set")
    assert model.identifier is not None and model.identifier.breed_space is not None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--set", "guidance=-1"), "sampler setting guidance must be"),
        (("--set", "guidance_max_t=0.5"), "NAME one of steps, guidance"),
        (("--set", "eta=x"), "comma-separated numbers"),
        (("--set", "autoguidance=2"), "no autoguidance guide"),
        ((), "give the candidates"),
    ],
)
def test_bad_candidates_are_refused(
    flags: tuple[str, ...],
    message: str,
    tiny_diffusion_checkpoint: Path,
    folders_data: Path,
    cache_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        choose(tiny_diffusion_checkpoint, folders_data, tmp_path / "x", cache_dir, *flags)
    assert message in capsys.readouterr().err + str(stopped.value.code)


def test_the_source_is_never_overwritten_and_a_prior_is_required(
    tiny_diffusion_checkpoint: Path,
    tiny_checkpoint: Path,
    folders_data: Path,
    cache_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        choose(tiny_diffusion_checkpoint, folders_data, tiny_diffusion_checkpoint, cache_dir, "--set", "guidance=1")
    assert "another folder" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="gaussian prior"):
        choose(tiny_checkpoint, folders_data, tiny_checkpoint.parent / "x", cache_dir, "--set", "guidance=1")


def train_guide(source: Path, data: Path, out: Path, cache_dir: Path, *extra: str) -> Path:
    from training.prior import main as fit_prior

    fit_prior(
        [
            "--init-from",
            str(source),
            "--data",
            str(data),
            "--out",
            str(out),
            "--steps",
            "20",
            "--batch-size",
            "16",
            "--channels",
            "8",
            "--blocks",
            "1",
            "--log-every",
            "10",
            "--cache-dir",
            str(cache_dir),
            "--no-progress",
            *extra,
        ]
    )
    return out


def test_an_autoguidance_guide_is_attached_weighed_and_written(
    tiny_diffusion_checkpoint: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """A smaller prior trained on the same VAE becomes the guide; the written checkpoint carries its weights and the
    chosen weight; a new prior trained from it drops the guide (it was weighed against the old prior)."""
    guide = train_guide(tiny_checkpoint, folders_data, tmp_path / "guide", cache_dir)
    out = tmp_path / "guided"
    stage = choose(
        tiny_diffusion_checkpoint, folders_data, out, cache_dir, "--guide-from", str(guide), "--set", "autoguidance=1,3"
    )
    rows = stage["rows"]
    assert [r["sampling"]["autoguidance"] for r in rows] == [1.0, 3.0]
    assert rows[0]["fd_breed_head"] != rows[1]["fd_breed_head"]  # weight 3 moves the samples
    best = min(rows, key=lambda r: r["fd_breed_head"])
    model, card = checkpoint.load(out)
    guide_model, _ = checkpoint.load(guide)
    assert model.sampling.autoguidance == best["sampling"]["autoguidance"]
    assert card["prior"]["guide"] == {"channels": 8, "blocks": 1, "attention": False, "patch": 1}
    for name, weight in guide_model.prior.denoiser.state_dict().items():
        assert torch.equal(model.prior.guide.state_dict()[name], weight)
    assert card["stages"][-1]["args"]["guide_from"] == str(guide)
    retrained = train_guide(out, folders_data, tmp_path / "retrained", cache_dir)
    model, _ = checkpoint.load(retrained)
    assert model.prior.guide is None and model.sampling.autoguidance == 1.0


def test_a_guide_must_share_the_vae_and_the_standardisation(
    tiny_diffusion_checkpoint: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    model, _ = checkpoint.load(tiny_diffusion_checkpoint)
    with pytest.raises(checkpoint.CheckpointError, match="no diffusion prior"):
        checkpoint.attach_guide(model, tiny_checkpoint)
    unmirrored = train_guide(tiny_checkpoint, folders_data, tmp_path / "unmirrored", cache_dir, "--no-flip")
    with pytest.raises(checkpoint.CheckpointError, match="standardises the latents differently"):
        checkpoint.attach_guide(model, unmirrored)
    other, other_card = checkpoint.load(train_guide(tiny_checkpoint, folders_data, tmp_path / "guide", cache_dir))
    with torch.no_grad():
        next(other.vae.decoder.parameters()).add_(0.01)
    checkpoint.save(other, {k: v for k, v in other_card.items() if k != "weights_sha256"}, tmp_path / "other")
    with pytest.raises(checkpoint.CheckpointError, match="another VAE"):
        checkpoint.attach_guide(model, tmp_path / "other")
    with pytest.raises(SystemExit, match="another VAE"):
        choose(
            tiny_diffusion_checkpoint, folders_data, tmp_path / "x", cache_dir, "--guide-from", str(tmp_path / "other")
        )
    assert model.prior.guide is None  # a refused guide leaves the model as it was
