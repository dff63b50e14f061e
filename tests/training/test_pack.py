"""python -m training.pack and the prior trained from a pack alone (a lent GPU's way), then put into its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model import checkpoint, latent_ops
from training import prior as prior_stage
from training.pack import encoder_digest, read_pack
from training.pack import main as pack_latents
from training.prior import main as fit_prior
from training.prior import split_latents

DENOISER = ["--steps", "10", "--batch-size", "16", "--channels", "16", "--blocks", "1", "--log-every", "5"]


@pytest.fixture(scope="module")
def pack(tiny_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "tiny.safetensors"
    return pack_latents(
        ["--init-from", str(tiny_checkpoint), "--data", str(folders_data), "--out", str(out),
         "--cache-dir", str(cache_dir)]
    )  # fmt: skip


def test_a_pack_holds_the_priors_latents_at_8_bits(
    pack: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> None:
    model, card = checkpoint.load(tiny_checkpoint)
    with torch.no_grad():
        train_z, train_y, val_z, val_y, mirrored_z = split_latents(
            model, card, [folders_data], cache_dir, torch.device("cpu"), mirrored=True
        )
    packed = read_pack(pack)
    assert torch.equal(packed.train_y, train_y) and torch.equal(packed.val_y, val_y)
    assert packed.breeds == [b["name"] for b in card["breeds"]] and packed.encoder == encoder_digest(model.vae)
    assert packed.latent_shape == tuple(model.vae.cfg.latent_shape)
    everything = torch.cat([train_z, mirrored_z, val_z])
    half_step = (everything.max(0).values - everything.min(0).values) / 255 / 2
    for ours, exact in ((packed.train_z, train_z), (packed.mirrored_z, mirrored_z), (packed.val_z, val_z)):
        assert ours.shape == exact.shape and ((ours - exact).abs() <= half_step + 1e-5).all()


def test_a_prior_trained_from_a_pack_alone_goes_into_its_checkpoint(
    pack: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prior_stage, "SHARD_BYTES", 4096)  # several files, as a large denoiser would need
    alone = tmp_path / "denoiser"
    fit_prior(["--pack", str(pack), "--out", str(alone), *DENOISER, "--no-progress", "--device", "cpu"])
    shards = sorted(alone.glob("denoiser-*.safetensors"))
    assert len(shards) > 1 and not (alone / checkpoint.WEIGHTS_FILE).exists()
    about = json.loads((alone / prior_stage.DENOISER_CARD).read_text())
    assert [e["step"] for e in about["stage"]["history"]] == [5, 10] and about["stage"]["args"]["pack"] == str(pack)

    out = tmp_path / "checkpoint"
    fit_prior(["--init-from", str(tiny_checkpoint), "--denoiser-from", str(alone), "--out", str(out)])
    model, card = checkpoint.load(out)
    source, _ = checkpoint.load(tiny_checkpoint)
    assert model.prior.kind == "diffusion" and card["stages"][-1]["best_step"] == about["stage"]["best_step"]
    assert all(torch.equal(model.vae.state_dict()[k], v) for k, v in source.vae.state_dict().items())
    assert model.sampling.autoguidance == 1 and not model.sampling.distilled
    side = model.vae.cfg.image_size
    assert latent_ops.sample(model, 2, breed=1, seed=0).shape == (2, 3, side, side)
    assert (out / "figures" / "samples-prior.png").is_file()

    # A denoiser goes only into the checkpoint whose encoder made its latents.
    about["encoder"] = "0" * 64
    (alone / prior_stage.DENOISER_CARD).write_text(json.dumps(about))
    with pytest.raises(SystemExit, match="not trained on the latents"):
        fit_prior(["--init-from", str(tiny_checkpoint), "--denoiser-from", str(alone), "--out", str(tmp_path / "x")])


@pytest.fixture(scope="module")
def photo_pack(
    tiny_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("pack") / "photo.safetensors"
    return pack_latents(
        ["--init-from", str(tiny_checkpoint), "--data", str(folders_data), "--out", str(out),
         "--cache-dir", str(cache_dir), "--photo-dim", "4"]
    )  # fmt: skip


def test_a_photo_pack_holds_the_condition_the_prior_would_train_on(
    photo_pack: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The photo prior of a pack is the one training.prior --photo-dim fits on the same rows, and its photo numbers
    are that prior's whitening of the trunk's embeddings, at 8 bits."""
    out = tmp_path / "photo"
    fit_prior(
        ["--init-from", str(tiny_checkpoint), "--data", str(folders_data), "--cache-dir", str(cache_dir),
         "--out", str(out), "--photo-dim", "4", *DENOISER, "--steps", "1", "--no-progress"]
    )  # fmt: skip
    fitted = checkpoint.load(out)[0].prior.photo_prior.state_dict()
    packed = read_pack(photo_pack)
    assert packed.photos is not None and (packed.photos.seed, packed.photos.stop_fraction) == (0, 0.05)
    assert all(torch.allclose(v, fitted[k], atol=1e-6) for k, v in packed.photos.prior.state_dict().items())
    model, card = checkpoint.load(tiny_checkpoint)
    with torch.no_grad():
        *_, photo, mirror, val = split_latents(
            model, card, [folders_data], cache_dir, torch.device("cpu"), mirrored=True, photo_features=True
        )
    exact = [packed.photos.prior.whiten(f) for f in (photo, mirror, val)]
    half_step = (torch.cat(exact).max(0).values - torch.cat(exact).min(0).values) / 255 / 2
    for ours, whitened in zip((packed.photos.train, packed.photos.mirrored, packed.photos.val), exact, strict=True):
        assert ours.shape == whitened.shape and ((ours - whitened).abs() <= half_step + 1e-5).all()
    assert len(packed.photos.train) == len(packed.train_z) == len(photo)


def test_a_photo_conditioned_prior_trained_from_a_pack_goes_into_its_checkpoint(
    photo_pack: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    alone = tmp_path / "denoiser"
    fit_prior(["--pack", str(photo_pack), "--out", str(alone), *DENOISER, "--photo-dim", "4", "--no-progress"])
    assert (alone / prior_stage.PHOTO_PRIOR_FILE).is_file()
    out = tmp_path / "checkpoint"
    fit_prior(["--init-from", str(tiny_checkpoint), "--denoiser-from", str(alone), "--out", str(out)])
    model, card = checkpoint.load(out)
    packed = read_pack(photo_pack).photos
    assert packed is not None and card["prior"]["config"]["photo_dim"] == 4
    assert all(torch.equal(v, packed.prior.state_dict()[k]) for k, v in model.prior.photo_prior.state_dict().items())
    assert model.prior.denoiser.photo_embedding.weight.abs().sum() > 0  # learnt from the packed photo numbers
    assert model.prior.photo_dim == 4  # a sample's first 4 noise numbers draw its photo condition
    weights = torch.tensor([0.5, 0.5, 0.0])
    z, _ = latent_ops.mix_latents(model, weights, n=2, seed=7)
    assert torch.isfinite(z).all() and torch.equal(z, latent_ops.mix_latents(model, weights, n=2, seed=7)[0])


@pytest.mark.parametrize(
    "which, extra, message",
    [
        ("pack", ["--data", "somewhere"], "one of them"),
        ("pack", ["--photo-dim", "4"], "make the pack with python -m training.pack --photo-dim"),
        ("photo_pack", ["--photo-dim", "8"], "make the pack with python -m training.pack --photo-dim"),
        ("photo_pack", ["--photo-dim", "4", "--seed", "1"], "fitted for --seed 0"),
    ],
)
def test_a_pack_run_refuses_what_it_cannot_do(
    which: str, extra: list[str], message: str, tmp_path: Path, request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        fit_prior(["--pack", str(request.getfixturevalue(which)), "--out", str(tmp_path / "p"), *extra])
    assert message in capsys.readouterr().err + str(stopped.value.code)


def test_without_photos_or_a_pack_there_is_nothing_to_train_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        fit_prior(["--out", str(tmp_path / "p")])
    assert "--data" in capsys.readouterr().err
