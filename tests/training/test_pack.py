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


def test_a_pack_run_takes_the_latents_from_the_pack_alone(
    pack: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        fit_prior(["--pack", str(pack), "--out", str(tmp_path / "p"), "--data", "somewhere"])
    assert "one of them" in capsys.readouterr().err


def test_without_photos_or_a_pack_there_is_nothing_to_train_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        fit_prior(["--out", str(tmp_path / "p")])
    assert "--data" in capsys.readouterr().err
