from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import checkpoint, latent_ops
from tests.conftest import TINY_RUN
from training.train import main as train

ROOT = Path(__file__).resolve().parents[2]


def train_args(data: Path, out: Path, cache: Path, epochs: int) -> list[str]:
    return [
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--cache-dir",
        str(cache),
        "--no-progress",
        *TINY_RUN,
    ]


def test_training_writes_a_checkpoint_that_loads_and_evaluates(tiny_checkpoint: Path) -> None:
    model, card = checkpoint.load(tiny_checkpoint)
    assert [b["name"] for b in card["breeds"]] == ["beagle", "gordon_setter", "samoyed"]
    assert card["split"]["validation_ids"] and card["split"]["seed"] == 0
    assert card["torch_version"] and "training_metrics" in card and card["prior"] == {"kind": "gaussian"}
    assert [stage["command"] for stage in card["stages"]] == ["training"]
    lines = (tiny_checkpoint / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert len(json.loads(lines[-1])["val_kl_per_dim"]) == model.vae.cfg.latent_dim
    assert (tiny_checkpoint / "figures" / "samples-epoch003.png").is_file()
    evaluation = card["evaluation"]
    for key in ("val_neg_elbo_bpd", "val_psnr", "identify_top1", "identify_top5", "generated_breed_top1"):
        assert math.isfinite(evaluation[key])
    assert set(evaluation["identify_per_breed_top1"]) == {"beagle", "gordon_setter", "samoyed"}
    for figure in ("confusion.png", "latent_map.png", "samples.png", "mixes.png", "metrics.json"):
        assert (tiny_checkpoint / "eval" / figure).is_file()
    assert latent_ops.sample(model, 2, breed=0, seed=1).shape == (2, 3, 64, 64)


def test_resume_continues_from_the_last_epoch(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    out = tmp_path / "run"
    train([*train_args(folders_data, out, cache_dir, 2), "--stop-after", "1"])
    assert [h["epoch"] for h in checkpoint.read_card(out)["history"]] == [1]
    train([*train_args(folders_data, out, cache_dir, 2), "--resume"])
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert [h["epoch"] for h in checkpoint.read_card(out)["history"]] == [1, 2]


def test_a_resumed_run_may_switch_to_a_shared_covariance(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    """The latent Gaussians are refitted at every epoch's end and not kept in the resume state, so their form may
    change when resuming; the weights file then holds one covariance factor instead of one per breed."""
    out = tmp_path / "run"
    train([*train_args(folders_data, out, cache_dir, 2), "--stop-after", "1"])
    assert checkpoint.load(out)[0].vae.prior_cholesky.shape[0] == 3
    train([*train_args(folders_data, out, cache_dir, 2), "--resume", "--shared-covariance"])
    model, card = checkpoint.load(out)
    assert model.vae.prior_cholesky.shape[0] == 1 and card["config"]["shared_covariance"] is True
    assert [h["epoch"] for h in card["history"]] == [1, 2]


def test_resume_without_a_run_says_so(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    with pytest.raises(SystemExit, match="no resume.json"):
        train([*train_args(folders_data, tmp_path / "empty", cache_dir, 1), "--resume"])


def test_two_process_torchrun_with_gloo(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "training",
        *train_args(folders_data, out, cache_dir, 1),
        "--threads",
        "1",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    checkpoint.load(out)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_init_from_starts_with_the_given_weights(
    tmp_path: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> None:
    out = tmp_path / "finetune"
    train(
        [
            *train_args(folders_data, out, cache_dir, 1),
            "--init-from",
            str(tiny_checkpoint),
            "--generated-breed-weight",
            "50",
            "--lr",
            "1e-9",
        ]
    )
    tuned, card = checkpoint.load(out)
    source, _ = checkpoint.load(tiny_checkpoint)
    assert card["loss_weights"]["generated_breed_weight"] == 50
    assert [stage["command"] for stage in card["stages"]] == ["training", "training"]
    assert torch.allclose(tuned.vae.breed_embeddings, source.vae.breed_embeddings, atol=1e-5)  # lr ~0: weights kept


def test_init_from_refuses_another_architecture(
    tmp_path: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> None:
    args = [*train_args(folders_data, tmp_path / "x", cache_dir, 1), "--init-from", str(tiny_checkpoint)]
    args[args.index("--latent-channels") + 1] = "3"
    with pytest.raises(SystemExit, match="another architecture"):
        train(args)


def test_decoder_only_keeps_the_latents_and_the_prior(
    tmp_path: Path, tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> None:
    out = tmp_path / "decoder"
    train(
        [
            *train_args(folders_data, out, cache_dir, 1),
            "--init-from",
            str(tiny_diffusion_checkpoint),
            "--decoder-only",
            "--generated-breed-weight",
            "0",
        ]
    )
    tuned, card = checkpoint.load(out)
    source, source_card = checkpoint.load(tiny_diffusion_checkpoint)
    assert tuned.vae.cfg == source.vae.cfg and tuned.sampling == source.sampling
    assert card["prior"] == source_card["prior"] and card["loss_weights"]["generated_breed_weight"] == 0
    tuned_state, source_state = tuned.state_dict(), source.state_dict()
    frozen = [
        k for k in source_state if k.startswith(("encoder.", "breed_head.", "prior_", "pooled_", "latent_prior."))
    ]
    assert frozen and all(torch.equal(tuned_state[k], source_state[k]) for k in frozen)
    assert not torch.equal(tuned_state["decoder.head.1.weight"], source_state["decoder.head.1.weight"])
    assert card["stages"][:-1] == source_card["stages"]  # the lineage goes on
    assert "evaluation" not in card  # the old decoder's numbers do not describe this one
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(logged["train_pixel_nll"]) and math.isfinite(logged["val_psnr"])
    assert not (out / "resume.json").exists()


def test_decoder_only_needs_a_trained_checkpoint(
    tmp_path: Path, folders_data: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        train([*train_args(folders_data, tmp_path / "x", cache_dir, 1), "--decoder-only"])
    assert "give --init-from" in capsys.readouterr().err
    assert not (tmp_path / "x" / checkpoint.WEIGHTS_FILE).exists()


def test_plain_baseline_samples_from_the_standard_normal(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    out = tmp_path / "plain"
    train([*train_args(folders_data, out, cache_dir, 1), "--plain"])
    model, card = checkpoint.load(out)
    cfg = model.vae.cfg
    assert model.prior.kind == "gaussian" and cfg.breed_embed_dim == 0 and not cfg.learned_pixel_scale
    assert card["loss_weights"]["generated_breed_weight"] == 0
    assert torch.equal(model.vae.prior_mean, torch.zeros_like(model.vae.prior_mean))
    assert torch.equal(model.vae.prior_cholesky[0], torch.eye(cfg.latent_dim))
    # No breed input: the same noise gives the same dog whatever breed is asked for.
    assert torch.allclose(
        latent_ops.mix(model, torch.tensor([1.0, 0, 0]), seed=3),
        latent_ops.mix(model, torch.tensor([0, 0, 1.0]), seed=3),
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "must be positive"),
        (["--batch-size", "-4"], "must be positive"),
        (["--lr=-1e-3"], "--lr: must be a number that is not negative"),
        (["--beta", "nan"], "--beta: must be a number"),
        (["--stop-after", "31"], "--stop-after must lie between 1 and --epochs"),
        (["--validation-fraction", "1"], "strictly between 0 and 1"),
        (["--max-per-breed", "1"], "at least 2"),
        (["--channels", "32,x"], "positive integers"),
        (["--classifier-channels", "0,8"], "positive integers"),
        (["--decoder-only"], "give --init-from"),
    ],
)
def test_training_refuses_bad_flags_before_reading_any_data(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"), *flags])
    assert message in capsys.readouterr().err
    assert parse_args(["--data", "d", "--out", "o"]).epochs == 30  # the defaults pass


def test_the_perceptual_and_adversarial_terms_train_and_resume(
    tmp_path: Path, folders_data: Path, cache_dir: Path
) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "gan"
    terms = ["--perceptual-weight", "0.1", "--adversarial-weight", "0.5", "--adversarial-start", "2"]
    terms += ["--discriminator-channels", "16"]
    train([*train_args(folders_data, out, cache_dir, 2), *terms, "--stop-after", "1"])
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["train_perceptual"] > 0 and logged["train_adaptive_weight"] > 0
    assert math.isfinite(logged["train_discriminator"] + logged["train_generator"])
    saved = load_file(str(out / "resume.safetensors"))
    assert any(k.startswith("disc.") for k in saved) and any(k.startswith("disc_opt.") for k in saved)
    assert saved["disc.net.0.weight"].shape[0] == 16
    card = checkpoint.read_card(out)
    assert card["loss_weights"]["perceptual_weight"] == 0.1 and card["loss_weights"]["adversarial_start"] == 2
    train([*train_args(folders_data, out, cache_dir, 2), *terms, "--resume"])
    assert [h["epoch"] for h in checkpoint.read_card(out)["history"]] == [1, 2]
