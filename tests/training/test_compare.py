from __future__ import annotations

from pathlib import Path

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
