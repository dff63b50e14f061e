from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.compare import main as compare


def test_compare_figure_puts_two_checkpoints_side_by_side(tmp_path: Path, tiny_checkpoint: Path) -> None:
    rows = ["--breeds", "beagle,samoyed", "--mixes", "beagle+gordon_setter", "--columns", "3"]
    out = compare([str(tiny_checkpoint), str(tiny_checkpoint), "--out", str(tmp_path / "cmp.png"), *rows])
    with Image.open(out) as figure:
        assert figure.height > 3 * 64  # three rows of 64 px samples (scaled) under a header
    with pytest.raises(SystemExit, match="unknown breed 'poodle'"):
        compare([str(tiny_checkpoint), str(tiny_checkpoint), "--out", str(tmp_path / "x.png"), "--breeds", "poodle"])
    # A checkpoint that is gone keeps its place through its panel in an earlier figure.
    again = compare([str(tiny_checkpoint), "--first-panel-of", str(out), "--out", str(tmp_path / "again.png"), *rows])
    with Image.open(out) as first, Image.open(again) as second:
        assert second.size == first.size
        assert second.tobytes() == first.convert("RGB").tobytes()  # same checkpoint, seeds and layout
    with pytest.raises(SystemExit, match="same --breeds, --mixes and --columns"):
        compare(
            [
                str(tiny_checkpoint),
                "--first-panel-of",
                str(out),
                "--out",
                str(tmp_path / "x.png"),
                "--breeds",
                "beagle",
                *rows[2:],
            ]
        )


def test_a_breed_one_checkpoint_does_not_know_is_a_grey_row_in_its_panel(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from model import checkpoint

    model, card = checkpoint.load(tiny_checkpoint)
    renamed = {
        **card,
        "breeds": [{**b, "name": "pug" if b["name"] == "samoyed" else b["name"]} for b in card["breeds"]],
    }
    checkpoint.save(model, {k: v for k, v in renamed.items() if k != "weights_sha256"}, tmp_path / "other")
    rows = ["--breeds", "beagle,samoyed", "--mixes", "", "--columns", "2"]
    out = compare([str(tmp_path / "other"), str(tiny_checkpoint), "--out", str(tmp_path / "cmp.png"), *rows])
    with Image.open(out) as figure:
        first = figure.convert("RGB").crop((230, 28, 230 + 2 * 130, figure.height))  # the first panel
        half = first.height // 2

        def grey_share(box: tuple[int, int, int, int]) -> float:
            return float((np.asarray(first.crop(box)) == 217).all(-1).mean())

        assert grey_share((0, half + 4, first.width, first.height - 4)) > 0.7  # its samoyed row: grey and a note
        assert grey_share((0, 4, first.width, half - 4)) < 0.05  # its beagles are drawn


def test_a_transfer_row_shows_generated_dogs_then_the_same_dogs_as_the_other_breed(
    tmp_path: Path, tiny_diffusion_checkpoint: Path
) -> None:
    import torch

    from model import checkpoint, latent_ops
    from training.compare import breed_weights, row_images

    model, card = checkpoint.load(tiny_diffusion_checkpoint)
    names = [b["name"] for b in card["breeds"]]
    row = row_images(model, names, "beagle>samoyed", 5, seed=3)
    dogs = latent_ops.mix(model, breed_weights(names, "beagle"), n=2, seed=3)
    assert row.shape[0] == 5 and torch.equal(row[:2], dogs)
    assert torch.equal(row[2:4], latent_ops.transfer(model, dogs, breed_weights(names, "samoyed"), seed=3))
    assert not torch.equal(row[2:4], dogs) and (row[4] == 0.85).all()  # moved; an odd row ends grey
    out = compare(
        [str(tiny_diffusion_checkpoint), "--out", str(tmp_path / "t.png"), "--breeds", "beagle", "--mixes", ""]
        + ["--transfers", "beagle>samoyed", "--columns", "4"]
    )
    with Image.open(out) as figure:
        assert 28 + 2 * 128 <= figure.height < 28 + 3 * 128  # two rows of 64-px dogs at scale 2 under the header
    with pytest.raises(SystemExit, match="two breeds"):
        compare([str(tiny_diffusion_checkpoint), "--out", str(tmp_path / "x.png"), "--transfers", "beagle>pug>samoyed"])
