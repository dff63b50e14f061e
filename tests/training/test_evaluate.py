from __future__ import annotations

import math
from pathlib import Path

import pytest

from model.sampler import SamplerSettings
from training.evaluate import evaluate
from training.evaluate import main as evaluate_main
from training.fid import fid_sweep


def test_the_sweep_reproduces_the_evaluation_at_the_checkpoints_settings(
    tiny_diffusion_checkpoint: Path, folders_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    flags = ["--data", str(folders_data), "--fid-samples", "6", "--cache-dir", str(cache_dir)]
    sweep = ["--sweep", "guidance=1,2", "temperature=1"]
    rows = evaluate_main([str(tiny_diffusion_checkpoint), *flags, *sweep])["fid_sweep"]
    assert [(r["sampling"]["guidance"], r["temperature"]) for r in rows] == [(1.0, 1.0), (2.0, 1.0)]
    assert {r["sampling"]["steps"] for r in rows} == {4}  # the others stay the checkpoint's
    metrics = evaluate(
        tiny_diffusion_checkpoint,
        folders_data,
        out=tmp_path / "eval",
        fid_samples=6,
        cache_dir=cache_dir,
        update_card=False,
    )  # the checkpoint's own settings: guidance 2
    assert math.isclose(rows[1]["fid_prior_samples"], metrics["fid_prior_samples"], rel_tol=1e-6)
    assert rows[1]["generated_breed_top1"] == metrics["generated_breed_top1"]
    assert rows[0]["fid_prior_samples"] != rows[1]["fid_prior_samples"]
    # the bundled Inception also scores the floor and the reconstructions
    assert metrics["fid_real_vs_real"] >= 0
    assert metrics["fid_reconstructions"] > 0 and math.isfinite(metrics["fid_reconstructions"])
    assert 0 <= metrics["identify_top1_reconstructions"] <= 1
    alone = evaluate_main([str(tiny_diffusion_checkpoint), *flags, "--reconstructions-only"])
    assert math.isclose(alone["fid_reconstructions"], metrics["fid_reconstructions"], rel_tol=1e-6)
    assert math.isclose(alone["fid_real_vs_real"], metrics["fid_real_vs_real"], rel_tol=1e-6)


def test_temperatures_are_swept_beside_the_settings(tmp_path: Path) -> None:
    import argparse

    from training.evaluate import split_temperatures

    temperatures, rest = split_temperatures(argparse.ArgumentParser(), ["eta=0,1", "temperature=1,0.5"])
    assert temperatures == (1.0, 0.5) and rest == ["eta=0,1"]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (["guidance_max_t=0.5"], "NAME one of"),
        (["eta=2"], "sampler setting eta must be"),
        (["temperature=9"], "temperatures must lie in [0, 3]"),
    ],
)
def test_bad_sweeps_are_refused_before_any_sampling(
    sweep: list[str], message: str, tiny_diffusion_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        evaluate_main([str(tiny_diffusion_checkpoint), "--data", "nowhere", "--sweep", *sweep])
    assert message in capsys.readouterr().err


def test_a_gaussian_prior_has_no_sampler_settings_to_sweep(tiny_checkpoint: Path, folders_data: Path) -> None:
    with pytest.raises(SystemExit, match="gaussian prior"):
        fid_sweep(tiny_checkpoint, folders_data, [SamplerSettings(guidance=3.0)], fid_samples=6)


def test_breed_pairs_are_distinct_reproducible_and_in_either_order() -> None:
    from training.evaluate import breed_pairs

    pairs = breed_pairs(28, 100, seed=0)
    assert pairs.shape == (100, 2) and bool((pairs[:, 0] != pairs[:, 1]).all())
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 100
    assert pairs.equal(breed_pairs(28, 100, seed=0)) and not pairs.equal(breed_pairs(28, 100, seed=1))
    assert bool((pairs[:, 0] > pairs[:, 1]).any() and (pairs[:, 0] < pairs[:, 1]).any())
    assert len(breed_pairs(3, 100, seed=0)) == 3  # all there are


def test_mix_fidelity_scores_what_the_breed_head_sees(
    tiny_diffusion_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a "decoder" that shows the requested weights and a "breed head" that reads them back, every mix carries
    both parents and the larger share ranks first; one that shows only the smaller share never ranks it first; the
    pure parents' score counts pairs whose two pure dogs are each recognised."""
    import torch

    from model import checkpoint, latent_ops
    from training import evaluate as ev

    model, _ = checkpoint.load(tiny_diffusion_checkpoint)
    monkeypatch.setattr(latent_ops, "breed_probabilities", lambda model, images: images)
    monkeypatch.setattr(latent_ops, "decode", lambda model, z, weights: weights.clone())
    faithful = ev.mix_fidelity(model, pairs=3, seeds=2)
    assert faithful["both_parents_top3"] == 1.0 and faithful["major_parent_first"] == 1.0
    assert faithful["pairs"] == 3 and faithful["seeds"] == 2

    def minor_parent(model, z, weights):  # type: ignore[no-untyped-def]
        shown = torch.zeros_like(weights)
        shown[torch.arange(len(weights)), weights.masked_fill(weights == 0, 2.0).argmin(1)] = 1.0
        return shown

    monkeypatch.setattr(latent_ops, "decode", minor_parent)
    assert ev.mix_fidelity(model, pairs=3, seeds=1)["major_parent_first"] == 0.0

    # Two decoy breeds the head always rates 0.6, so a top 3 holds one real breed at most: a 50/50 mix (0.5 each)
    # never shows both parents, while pure dogs (1.0) are still recognised, unless they all look like breed 0.
    def with_decoys(model, images):  # type: ignore[no-untyped-def]
        return torch.cat([images, torch.full((len(images), 2), 0.6)], 1)

    monkeypatch.setattr(latent_ops, "breed_probabilities", with_decoys)
    monkeypatch.setattr(latent_ops, "decode", lambda model, z, weights: weights.clone())
    decoyed = ev.mix_fidelity(model, pairs=3, seeds=1)
    assert decoyed["both_parents_top3"] == 0.0 and decoyed["pure_parents_top3"] == 1.0

    def always_the_first_breed(model, z, weights):  # type: ignore[no-untyped-def]
        shown = torch.zeros_like(weights)
        shown[:, 0] = 1.0
        return shown

    monkeypatch.setattr(latent_ops, "decode", always_the_first_breed)
    assert ev.mix_fidelity(model, pairs=3, seeds=1)["pure_parents_top3"] == 0.0  # a pair's two breeds differ


def test_mixes_only_compares_sampler_settings_and_draws_the_pairs(
    tiny_diffusion_checkpoint: Path, folders_data: Path, tmp_path: Path
) -> None:
    flags = ["--data", str(folders_data), "--mixes-only", "--out", str(tmp_path)]
    rows = evaluate_main([str(tiny_diffusion_checkpoint), *flags, "--sweep", "guidance=1,2"])["mix_fidelity"]
    assert [r["sampling"]["guidance"] for r in rows] == [1.0, 2.0]
    assert all(0 <= r["both_parents_top3"] <= 1 and 0 <= r["major_parent_first"] <= 1 for r in rows)
    assert (tmp_path / "mix_comparison.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        evaluate_main([str(tiny_diffusion_checkpoint), *flags, "--sweep", "guidance=-1"])


def test_the_mix_figure_keeps_a_small_models_breeds_and_picks_the_named_ones_of_a_large_one() -> None:
    from training.evaluate import FIGURE_BREEDS, mix_grid_breeds

    assert mix_grid_breeds(["a", "b", "c"]) == [0, 1, 2]
    many = [f"breed{i}" for i in range(100)] + ["pug", "samoyed"]
    chosen = mix_grid_breeds(many, most=6)
    assert len(chosen) == 6 == len(set(chosen)) and chosen == sorted(chosen)
    assert {many.index("pug"), many.index("samoyed")} <= set(chosen)  # the figure breeds first, then others
    assert len(mix_grid_breeds(list(FIGURE_BREEDS) + many, most=4)) == 4  # more named breeds than room: the first


def test_transfer_strengths_judge_transfers_to_other_breeds(
    tiny_diffusion_checkpoint: Path, folders_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from model import latent_ops

    asked: list[tuple[float, torch.Tensor]] = []
    real_transfer = latent_ops.transfer

    def transfer(model, images, weights, strength, seed):  # type: ignore[no-untyped-def]
        asked.append((strength, weights))
        return real_transfer(model, images, weights, strength, seed)

    monkeypatch.setattr(latent_ops, "transfer", transfer)
    flags = ["--data", str(folders_data), "--transfer-strengths", "0,1"]
    rows = evaluate_main([str(tiny_diffusion_checkpoint), *flags])["transfer_fidelity"]
    assert [r["strength"] for r in rows] == [0.0, 1.0]
    assert all(0 <= r["target_top1"] <= 1 and 0 <= r["target_top1_vae_head"] <= 1 for r in rows)
    n = rows[0]["photos"]
    assert n > 0 and len(asked) == 2 * n and {s for s, _ in asked} == {0.0, 1.0}
    assert all(w.sum() == 1 and w.max() == 1 for _, w in asked)  # one target breed per photo
    # the same photos and targets at every strength
    assert all(torch.equal(a[1], b[1]) for a, b in zip(asked[:n], asked[n:], strict=True))
    with pytest.raises(SystemExit):
        evaluate_main([str(tiny_diffusion_checkpoint), "--data", str(folders_data), "--transfer-strengths", "1.5"])
