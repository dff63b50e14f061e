from __future__ import annotations

from pathlib import Path

import torch

from model import checkpoint, latent_ops
from model.reader import MixReader, ReaderConfig
from training.reader import MIXES_FILE, random_conditions, train_reader
from training.reader import main as train_reader_stage


def test_random_conditions_are_pure_breeds_and_two_and_three_breed_mixes() -> None:
    w = random_conditions(4000, 10, torch.Generator().manual_seed(0))
    assert w.shape == (4000, 10) and torch.allclose(w.sum(1), torch.ones(4000)) and (w >= 0).all()
    parts = (w > 0).sum(1)
    shares = [float((parts == k).float().mean()) for k in (1, 2, 3)]
    assert abs(shares[0] - 0.25) < 0.03 and abs(shares[1] - 0.5) < 0.03 and abs(shares[2] - 0.25) < 0.03
    two = w[parts == 2]
    assert two.max(1).values.max() <= 0.9 + 1e-6  # the first breed's share in [0.1, 0.9]


def test_the_reader_learns_which_breed_leads_a_mix() -> None:
    """Latents whose mean is the weighted sum of breed means: after training, its likeliest breed is the mix's
    largest share far more often than chance (1 in 8)."""
    generator = torch.Generator().manual_seed(0)
    n_breeds, shape = 8, (4, 4, 4)
    means = 2 * torch.randn(n_breeds, 64, generator=generator)
    w = random_conditions(1500, n_breeds, generator)
    z = w @ means + 0.3 * torch.randn(1500, 64, generator=generator)
    torch.manual_seed(0)
    reader = MixReader(ReaderConfig(channels=8), n_breeds, shape)
    history = train_reader(reader, z, w, epochs=5, batch_size=64, lr=3e-3, seed=0)
    assert [h["epoch"] for h in history] == list(range(1, 6))
    assert history[-1]["held_out_largest_first"] > 0.6
    assert history[-1]["held_out_cross_entropy"] < history[0]["held_out_cross_entropy"]


def test_the_stage_writes_a_checkpoint_whose_ancestry_uses_the_reader(
    tmp_path: Path, tiny_diffusion_checkpoint: Path, capsys
) -> None:
    args = ["--init-from", str(tiny_diffusion_checkpoint), "--out", str(tmp_path), "--mixes", "60", "--epochs", "2"]
    train_reader_stage([*args, "--batch-size", "16", "--no-progress"])
    model, card = checkpoint.load(tmp_path)
    assert model.prior.reader is not None and card["prior"]["reader"] == {"channels": 32}
    stage = card["stages"][-1]
    assert stage["command"] == "training.reader" and len(stage["history"]) == 2 and "evaluation" not in card
    source, _ = checkpoint.load(tiny_diffusion_checkpoint)
    assert torch.equal(model.prior.reader.z_mean, source.prior.denoiser.z_mean)
    z = latent_ops.sample_latents(model, 1, breed=0, seed=3)[0][0]
    assert abs(float(latent_ops.ancestry_weights(model, z).sum()) - 1) < 1e-5
    # A second run reuses the drawn mixes.
    capsys.readouterr()
    train_reader_stage([*args, "--batch-size", "16", "--no-progress"])
    assert f"60 mixes from {tmp_path / MIXES_FILE}" in capsys.readouterr().out
