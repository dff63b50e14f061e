"""bench.ancestry on the tiny diffusion checkpoint: the rows it reports and the shares it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ancestry import main


def test_reports_one_row_per_share(tiny_diffusion_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "ancestry.json"
    rows = main(
        ["--checkpoint", str(tiny_diffusion_checkpoint), "--shares", "1,0.7", "--no-progress", "--out", str(out)]
    )
    assert [row["share"] for row in rows] == [1.0, 0.7]
    for row in rows:
        assert row["mixes"] == 3 and 0 <= row["top1"] <= row["in_answer"] <= 1
        assert 0 <= row["mean_weight"] <= 1 and row["seconds_per_call"] > 0
    assert json.loads(out.read_text())["rows"] == rows


@pytest.mark.parametrize("shares", ["0.5", "1.2", "0.3,0.9"])
def test_a_largest_component_must_be_the_largest(shares: str) -> None:
    with pytest.raises(SystemExit):
        main(["--shares", shares])
