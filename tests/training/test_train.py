from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import checkpoint, latent_ops
from tests.conftest import TINY_ARCH
from training.evaluate import evaluate
from training.train import main as train

ROOT = Path(__file__).resolve().parents[2]


def _args(data: Path, out: Path, cache: Path, epochs: int) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--epochs", str(epochs), "--batch-size", "8",
            "--cache-dir", str(cache), "--no-progress", *TINY_ARCH]


def test_training_writes_a_checkpoint_that_loads_and_evaluates(tiny_checkpoint: Path) -> None:
    model, card = checkpoint.load(tiny_checkpoint)
    assert [b["name"] for b in card["breeds"]] == ["beagle", "gordon_setter", "samoyed"]
    assert card["split"]["validation_ids"] and card["split"]["seed"] == 0
    assert card["torch_version"] and "training_metrics" in card
    lines = (tiny_checkpoint / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert len(json.loads(lines[-1])["val_kl_per_dim"]) == model.cfg.latent_dim
    assert (tiny_checkpoint / "figures" / "samples-epoch003.png").is_file()
    evaluation = card["evaluation"]
    for key in ("val_neg_elbo_bpd", "val_psnr", "identify_top1", "identify_top5", "generated_breed_top1"):
        assert math.isfinite(evaluation[key])
    assert set(evaluation["identify_per_breed_top1"]) == {"beagle", "gordon_setter", "samoyed"}
    for figure in ("confusion.png", "latent_map.png", "samples.png", "mixes.png", "metrics.json"):
        assert (tiny_checkpoint / "eval" / figure).is_file()
    images = latent_ops.sample(model, 2, breed=0, seed=1)
    assert images.shape == (2, 3, 64, 64)


def test_no_half_written_files_are_left_behind(tiny_checkpoint: Path) -> None:
    assert not [p for p in tiny_checkpoint.iterdir() if p.name.endswith(".tmp")]
    for name in (checkpoint.WEIGHTS_FILE, checkpoint.CARD_FILE):  # readable by a non-root service user
        assert (tiny_checkpoint / name).stat().st_mode & 0o777 == 0o644


def test_corrupt_weights_are_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    for name in (checkpoint.CARD_FILE, checkpoint.WEIGHTS_FILE):
        (tmp_path / name).write_bytes((tiny_checkpoint / name).read_bytes())
    with open(tmp_path / checkpoint.WEIGHTS_FILE, "r+b") as f:
        f.seek(-10, os.SEEK_END)
        f.write(b"\0" * 10)
    with pytest.raises(checkpoint.CheckpointError, match="do not match the SHA-256"):
        checkpoint.load(tmp_path)
    (tmp_path / checkpoint.CARD_FILE).write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="not valid JSON"):
        checkpoint.load(tmp_path)


def test_resume_continues_from_the_last_epoch(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    out = tmp_path / "run"
    train(_args(folders_data, out, cache_dir, 1))
    train([*_args(folders_data, out, cache_dir, 2), "--resume"])
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert [h["epoch"] for h in checkpoint.read_card(out)["history"]] == [1, 2]


def test_resume_without_a_run_says_so(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    with pytest.raises(SystemExit, match="no resume.json"):
        train([*_args(folders_data, tmp_path / "empty", cache_dir, 1), "--resume"])


def test_fid_is_computed_with_the_bundled_inception(tiny_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path) -> None:
    metrics = evaluate(tiny_checkpoint, folders_data, out=tmp_path, fid_samples=6, cache_dir=cache_dir, update_card=False)
    assert metrics["fid_prior_samples"] > 0 and math.isfinite(metrics["fid_prior_samples"])
    assert metrics["fid_real_vs_real"] >= 0
    assert metrics["fid_reconstructions"] > 0 and math.isfinite(metrics["fid_reconstructions"])


def test_two_process_torchrun_with_gloo(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "training", *_args(folders_data, out, cache_dir, 1), "--threads", "1"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    model, card = checkpoint.load(out)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_init_from_starts_with_the_given_weights(tmp_path: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path) -> None:
    out = tmp_path / "finetune"
    train([*_args(folders_data, out, cache_dir, 1), "--init-from", str(tiny_checkpoint), "--generated-breed-weight", "50", "--lr", "1e-9"])
    tuned, card = checkpoint.load(out)
    source, _ = checkpoint.load(tiny_checkpoint)
    assert tuned.cfg.generated_breed_weight == 50
    assert torch.allclose(tuned.breed_embeddings, source.breed_embeddings, atol=1e-5)  # lr ~0: weights kept


def test_init_from_refuses_another_architecture(tmp_path: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path) -> None:
    args = [*_args(folders_data, tmp_path / "x", cache_dir, 1), "--init-from", str(tiny_checkpoint)]
    args[args.index("--latent-channels") + 1] = "3"
    with pytest.raises(SystemExit, match="another architecture"):
        train(args)


def test_adversarial_stage_tunes_only_the_decoder(tmp_path: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path) -> None:
    out = tmp_path / "adversarial"
    train([*_args(folders_data, out, cache_dir, 1), "--init-from", str(tiny_checkpoint), "--adversarial"])
    tuned, card = checkpoint.load(out)
    source, _ = checkpoint.load(tiny_checkpoint)
    tuned_state, source_state = tuned.state_dict(), source.state_dict()
    frozen = [k for k in source_state if k.startswith(("encoder.", "breed_head.", "prior_", "log_pixel_scale"))]
    assert frozen and all(torch.equal(tuned_state[k], source_state[k]) for k in frozen)
    assert not torch.equal(tuned_state["decoder.head.1.weight"], source_state["decoder.head.1.weight"])
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"adv_rec_loss", "adv_disc_loss", "adv_balance"} <= set(logged)
    assert card["init_from_card"]["training"]["epochs"] == 3  # the lineage of the starting weights


def test_adversarial_stage_keeps_a_learned_prior(tmp_path: Path, tiny_diffusion_checkpoint: Path, folders_data: Path,
                                                cache_dir: Path) -> None:
    out = tmp_path / "adversarial"
    train([*_args(folders_data, out, cache_dir, 1), "--init-from", str(tiny_diffusion_checkpoint), "--adversarial",
           "--prior-bank", "2"])
    tuned, card = checkpoint.load(out)
    source, source_card = checkpoint.load(tiny_diffusion_checkpoint)
    assert tuned.cfg == source.cfg  # the source's architecture, prior included, not the command line's
    tuned_state, source_state = tuned.state_dict(), source.state_dict()
    prior = [k for k in source_state if k.startswith("latent_prior.")]
    assert prior and all(torch.equal(tuned_state[k], source_state[k]) for k in prior)
    assert not torch.equal(tuned_state["decoder.head.1.weight"], source_state["decoder.head.1.weight"])
    assert card["latent_prior_training"] == source_card["latent_prior_training"]


def test_adversarial_stage_needs_a_trained_checkpoint(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    with pytest.raises(SystemExit, match="--init-from"):
        train([*_args(folders_data, tmp_path / "x", cache_dir, 1), "--adversarial"])


def test_decoder_only_keeps_the_latents_and_the_prior(tmp_path: Path, tiny_diffusion_checkpoint: Path, folders_data: Path,
                                                     cache_dir: Path) -> None:
    out = tmp_path / "decoder"
    train([*_args(folders_data, out, cache_dir, 1), "--init-from", str(tiny_diffusion_checkpoint), "--decoder-only"])
    tuned, card = checkpoint.load(out)
    source, source_card = checkpoint.load(tiny_diffusion_checkpoint)
    assert tuned.cfg == source.cfg
    tuned_state, source_state = tuned.state_dict(), source.state_dict()
    frozen = [k for k in source_state if k.startswith(("encoder.", "breed_head.", "prior_", "pooled_", "latent_prior."))]
    assert frozen and all(torch.equal(tuned_state[k], source_state[k]) for k in frozen)
    assert not torch.equal(tuned_state["decoder.head.1.weight"], source_state["decoder.head.1.weight"])
    assert card["latent_prior_training"] == source_card["latent_prior_training"]
    assert "evaluation" not in card  # the old decoder's numbers do not describe this one
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(logged["train_pixel_nll"]) and math.isfinite(logged["val_psnr"])
    assert not (out / "resume.json").exists()


def test_decoder_only_takes_its_loss_weights_from_the_command_line(tmp_path: Path, tiny_diffusion_checkpoint: Path,
                                                                  folders_data: Path, cache_dir: Path) -> None:
    out = tmp_path / "decoder"
    train([*_args(folders_data, out, cache_dir, 1), "--init-from", str(tiny_diffusion_checkpoint), "--decoder-only",
           "--generated-breed-weight", "0"])
    tuned, _ = checkpoint.load(out)
    source, _ = checkpoint.load(tiny_diffusion_checkpoint)
    assert source.cfg.generated_breed_weight > 0 and tuned.cfg.generated_breed_weight == 0
    assert tuned.cfg.to_dict() | {"generated_breed_weight": 0} == source.cfg.to_dict() | {"generated_breed_weight": 0}


def test_decoder_only_needs_a_trained_checkpoint(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    with pytest.raises(SystemExit, match="--init-from"):
        train([*_args(folders_data, tmp_path / "x", cache_dir, 1), "--decoder-only"])
    assert not (tmp_path / "x" / checkpoint.WEIGHTS_FILE).exists()


def test_decoder_only_and_adversarial_are_refused_together(tmp_path: Path, tiny_checkpoint: Path, folders_data: Path,
                                                          cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train([*_args(folders_data, tmp_path / "x", cache_dir, 1), "--init-from", str(tiny_checkpoint), "--decoder-only",
               "--adversarial"])
    assert "two different fine-tunings of the decoder" in capsys.readouterr().err


def test_plain_baseline_samples_from_the_standard_normal(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    out = tmp_path / "plain"
    train([*_args(folders_data, out, cache_dir, 1), "--plain"])
    model, _ = checkpoint.load(out)
    assert model.cfg.latent_prior == "standard" and model.cfg.breed_embed_dim == 0
    assert not model.cfg.learned_pixel_scale and model.cfg.generated_breed_weight == 0
    assert torch.equal(model.prior_mean, torch.zeros_like(model.prior_mean))
    assert torch.equal(model.prior_cholesky[0], torch.eye(model.cfg.latent_dim))
    # No breed input: the same noise gives the same dog whatever breed is asked for.
    assert torch.allclose(latent_ops.mix(model, torch.tensor([1.0, 0, 0]), seed=3),
                          latent_ops.mix(model, torch.tensor([0, 0, 1.0]), seed=3))


def test_compare_figure_puts_two_checkpoints_side_by_side(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from training.compare import main as compare

    out = compare([str(tiny_checkpoint), str(tiny_checkpoint), "--out", str(tmp_path / "cmp.png"),
                   "--breeds", "beagle,samoyed", "--mixes", "beagle+gordon_setter", "--columns", "3"])
    from PIL import Image

    with Image.open(out) as figure:
        assert figure.height > 3 * 64  # three rows of 64 px samples (scaled) under a header
    with pytest.raises(SystemExit, match="unknown breed 'poodle'"):
        compare([str(tiny_checkpoint), str(tiny_checkpoint), "--out", str(tmp_path / "x.png"), "--breeds", "poodle"])
    # A checkpoint that is gone keeps its place through its panel in an earlier figure.
    rows = ["--breeds", "beagle,samoyed", "--mixes", "beagle+gordon_setter", "--columns", "3"]
    again = compare([str(tiny_checkpoint), "--first-panel-of", str(out), "--out", str(tmp_path / "again.png"), *rows])
    with Image.open(out) as first, Image.open(again) as second:
        assert second.size == first.size
        assert second.tobytes() == first.convert("RGB").tobytes()  # same checkpoint, seeds and layout
    with pytest.raises(SystemExit, match="same --breeds, --mixes and --columns"):
        compare([str(tiny_checkpoint), "--first-panel-of", str(out), "--out", str(tmp_path / "x.png"), "--breeds", "beagle", *rows[2:]])  # 2 rows, not 3
    with pytest.raises(SystemExit, match="same --breeds, --mixes and --columns"):
        compare([str(tiny_checkpoint), "--first-panel-of", str(out), "--out", str(tmp_path / "x.png"), *rows[:-1], "2"])


def test_latent_prior_stage_adds_a_two_stage_prior(tmp_path: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path) -> None:
    from training.prior import main as fit_prior

    out = tmp_path / "prior"
    fit_prior(["--init-from", str(tiny_checkpoint), "--data", str(folders_data), "--out", str(out), "--steps", "40",
               "--batch-size", "16", "--hidden", "32", "--noise-dim", "4", "--log-every", "20",
               "--cache-dir", str(cache_dir), "--no-progress", "--no-flip"])
    model, card = checkpoint.load(out)
    source, _ = checkpoint.load(tiny_checkpoint)
    assert model.cfg.latent_prior == "two_stage" and model.latent_prior is not None
    fitted = card["latent_prior_training"]
    assert fitted["training_latents"] == card["split"]["train"] - fitted["early_stopping_latents"]  # no mirror images
    state, source_state = model.state_dict(), source.state_dict()
    assert all(torch.equal(state[k], v) for k, v in source_state.items())  # stage 1 copied unchanged
    logged = [json.loads(line) for line in (out / "prior-metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged] == [20, 40] and all(math.isfinite(e["stop_neg_elbo"] + e["val_neg_elbo"]) for e in logged)
    assert card["latent_prior_training"]["best_step"] in (20, 40)
    assert card["latent_prior_training"]["args"]["steps"] == 40 and card["split"] == checkpoint.read_card(tiny_checkpoint)["split"]
    assert (out / "figures" / "samples-prior.png").is_file()
    # Sampling now goes through the prior: its noise has noise_dim numbers, and a seed fixes the dog.
    assert latent_ops.noise_dim(model) == 4 + model.cfg.latent_dim  # u, then the residual noise
    assert model.cfg.prior_residual_scale == 0.5
    z, w = latent_ops.mix_latents(model, torch.tensor([0.5, 0.5, 0.0]), n=2, seed=7)
    assert z.shape == (2, model.cfg.latent_dim) and torch.equal(z, latent_ops.mix_latents(model, torch.tensor([1.0, 1.0, 0.0]), n=2, seed=7)[0])
    assert latent_ops.sample(model, 3, breed=1, seed=1).shape == (3, 3, 64, 64)


def test_latent_prior_stage_fits_a_diffusion_prior(tiny_diffusion_checkpoint: Path, tiny_checkpoint: Path) -> None:
    model, card = checkpoint.load(tiny_diffusion_checkpoint)
    assert model.cfg.latent_prior == "diffusion" and model.cfg.diffusion_sampling_steps == 4
    source, _ = checkpoint.load(tiny_checkpoint)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())  # stage 1 copied unchanged
    logged = [json.loads(line) for line in (tiny_diffusion_checkpoint / "prior-metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged] == [20, 40]
    assert all(math.isfinite(e["stop_denoising_mse"] + e["val_denoising_mse"]) and "output_scale" not in e for e in logged)
    fitted = card["latent_prior_training"]
    assert fitted["args"]["kind"] == "diffusion" and fitted["args"]["ema"] == 0.999
    # Every training photo (those not held back for early stopping) twice: as taken and mirrored.
    assert fitted["training_latents"] == 2 * (card["split"]["train"] - fitted["early_stopping_latents"])
    # The starting noise is one latent's worth, and a seed fixes the dog for every mix.
    assert latent_ops.noise_dim(model) == model.cfg.latent_dim
    z, _ = latent_ops.mix_latents(model, torch.tensor([0.5, 0.5, 0.0]), n=2, seed=7)
    assert z.shape == (2, model.cfg.latent_dim) and torch.equal(z, latent_ops.mix_latents(model, torch.tensor([1.0, 1.0, 0.0]), n=2, seed=7)[0])
    assert not torch.equal(z, latent_ops.mix_latents(model, torch.tensor([1.0, 0.0, 0.0]), n=2, seed=7)[0])
    # A stochastic sampler (eta > 0) also draws each step's fresh noise from the seed: still one dog per seed and mix.
    model.cfg.diffusion_eta = 1.0
    assert latent_ops.noise_dim(model) == model.cfg.diffusion_sampling_steps * model.cfg.latent_dim
    z, _ = latent_ops.mix_latents(model, torch.tensor([0.5, 0.5, 0.0]), n=2, seed=7)
    assert z.shape == (2, model.cfg.latent_dim) and torch.equal(z, latent_ops.mix_latents(model, torch.tensor([1.0, 1.0, 0.0]), n=2, seed=7)[0])


def test_latent_prior_stage_refuses_other_data(tmp_path: Path, tiny_checkpoint: Path, cache_dir: Path) -> None:
    from tests.conftest import write_kaggle
    from training.prior import main as fit_prior

    data = write_kaggle(tmp_path / "kaggle")
    with pytest.raises(SystemExit, match="held-out photos"):
        fit_prior(["--init-from", str(tiny_checkpoint), "--data", str(data), "--out", str(tmp_path / "p"),
                   "--steps", "2", "--cache-dir", str(cache_dir), "--no-progress"])


def test_fid_sweep_reproduces_the_evaluation_at_the_checkpoints_settings(tiny_two_stage_checkpoint: Path, folders_data: Path,
                                                                         cache_dir: Path, tmp_path: Path) -> None:
    from training.evaluate import fid_sweep

    rows = fid_sweep(tiny_two_stage_checkpoint, folders_data, [1.0, 0.5], [0.0, 0.5], fid_samples=6, cache_dir=cache_dir)
    assert [(r["residual_scale"], r["temperature"]) for r in rows] == [(0.0, 1.0), (0.0, 0.5), (0.5, 1.0), (0.5, 0.5)]
    metrics = evaluate(tiny_two_stage_checkpoint, folders_data, out=tmp_path / "eval", fid_samples=6,
                       cache_dir=cache_dir, update_card=False)
    assert math.isclose(rows[2]["fid_prior_samples"], metrics["fid_prior_samples"], rel_tol=1e-6)
    assert rows[0]["fid_prior_samples"] != rows[2]["fid_prior_samples"]


def test_fid_sweep_over_guidance_and_sampling_steps(tiny_diffusion_checkpoint: Path, tiny_two_stage_checkpoint: Path,
                                                   folders_data: Path, cache_dir: Path, tmp_path: Path) -> None:
    from training.evaluate import fid_sweep

    rows = fid_sweep(tiny_diffusion_checkpoint, folders_data, [1.0], fid_samples=6, cache_dir=cache_dir,
                     guidance_scales=[1.0, 2.0], sampling_steps=[2, 4])
    assert [(r["guidance"], r["sampling_steps"], r["eta"]) for r in rows] == [(1.0, 2, 0.0), (1.0, 4, 0.0), (2.0, 2, 0.0), (2.0, 4, 0.0)]
    metrics = evaluate(tiny_diffusion_checkpoint, folders_data, out=tmp_path / "eval", fid_samples=6,
                       cache_dir=cache_dir, update_card=False)  # the checkpoint's own: guidance 2, 4 steps
    assert math.isclose(rows[3]["fid_prior_samples"], metrics["fid_prior_samples"], rel_tol=1e-6)
    assert rows[3]["generated_breed_top1"] == metrics["generated_breed_top1"]
    stochastic = fid_sweep(tiny_diffusion_checkpoint, folders_data, [1.0], fid_samples=6, cache_dir=cache_dir, etas=[1.0])
    assert stochastic[0]["eta"] == 1.0 and stochastic[0]["fid_prior_samples"] != rows[3]["fid_prior_samples"]
    # The tiny, barely trained model: at guidance 2 the rescale left its FID unchanged, at 3 it moves it.
    rescaled = fid_sweep(tiny_diffusion_checkpoint, folders_data, [1.0], fid_samples=6, cache_dir=cache_dir,
                         guidance_scales=[3.0], guidance_rescales=[0.0, 1.0])
    assert [r["guidance_rescale"] for r in rescaled] == [0.0, 1.0]
    assert rescaled[0]["fid_prior_samples"] != rescaled[1]["fid_prior_samples"]
    with pytest.raises(SystemExit, match="diffusion_guidance_rescale must lie in"):  # refused before any sampling
        fid_sweep(tiny_diffusion_checkpoint, folders_data, [1.0], fid_samples=6, cache_dir=cache_dir, guidance_rescales=[0.5, 2.0])
    for setting in ({"guidance_scales": [1.0]}, {"etas": [1.0]}, {"guidance_rescales": [0.5]}):
        with pytest.raises(SystemExit, match="no diffusion prior"):
            fid_sweep(tiny_two_stage_checkpoint, folders_data, [1.0], fid_samples=6, cache_dir=cache_dir, **setting)


def test_latent_prior_stage_stops_when_the_early_stopping_elbo_stalls(tmp_path: Path, tiny_checkpoint: Path, folders_data: Path,
                                                                       cache_dir: Path) -> None:
    from training.prior import main as fit_prior

    out = tmp_path / "patient"
    # A zero learning rate never improves on the first check, so the run stops after 1 + patience checks.
    fit_prior(["--init-from", str(tiny_checkpoint), "--data", str(folders_data), "--out", str(out), "--steps", "100",
               "--lr", "0", "--batch-size", "16", "--hidden", "16", "--noise-dim", "2", "--log-every", "5",
               "--patience", "2", "--cache-dir", str(cache_dir), "--no-progress"])
    logged = [json.loads(line)["step"] for line in (out / "prior-metrics.jsonl").read_text().splitlines()]
    assert logged == [5, 10, 15]
    assert checkpoint.read_card(out)["latent_prior_training"]["best_step"] == 5


def test_prior_from_carries_a_trained_prior_on(tmp_path: Path, tiny_diffusion_checkpoint: Path, tiny_checkpoint: Path,
                                              folders_data: Path, cache_dir: Path) -> None:
    from training.prior import main as fit_prior

    args = ["--init-from", str(tiny_checkpoint), "--data", str(folders_data), "--kind", "diffusion", "--steps", "10",
            "--batch-size", "16", "--diffusion-channels", "16", "--diffusion-blocks", "1", "--sampling-steps", "4",
            "--log-every", "5", "--cache-dir", str(cache_dir), "--no-progress", "--prior-from", str(tiny_diffusion_checkpoint)]
    out = tmp_path / "carried"
    fit_prior([*args, "--out", str(out), "--lr", "0", "--ema", "0"])  # no learning: the prior must come back as it went in
    carried, card = checkpoint.load(out)
    source, source_card = checkpoint.load(tiny_diffusion_checkpoint)
    assert carried.latent_prior is not None and source.latent_prior is not None
    assert all(torch.equal(v, source.latent_prior.state_dict()[k]) for k, v in carried.latent_prior.state_dict().items())
    assert card["latent_prior_training"]["prior_from"] == source_card["latent_prior_training"]
    with pytest.raises(SystemExit, match="another prior"):
        fit_prior([*args, "--out", str(tmp_path / "wider"), "--diffusion-channels", "24"])


def test_weight_average_follows_the_weights_with_a_lag() -> None:
    from training.prior import WeightAverage

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


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "must be positive"),
    (["--batch-size", "-4"], "must be positive"),
    (["--lr=-1e-3"], "--lr: must be a number that is not negative"),
    (["--beta", "nan"], "--beta: must be a number"),
    (["--prior-bank", "-1"], "--prior-bank: must be a number that is not negative"),
    (["--validation-fraction", "1"], "strictly between 0 and 1"),
    (["--max-per-breed", "1"], "at least 2"),
    (["--channels", "32,x"], "positive integers"),
    (["--classifier-channels", "0,8"], "positive integers"),
])
def test_training_refuses_bad_flags_before_reading_any_data(flags: list[str], message: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from training.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"), *flags])
    assert message in capsys.readouterr().err
    assert parse_args(["--data", "d", "--out", "o"]).epochs == 30  # the defaults pass
