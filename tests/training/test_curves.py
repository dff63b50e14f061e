from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from training.curves import main as curves
from training.curves import prior_steps_before


def write_jsonl(path: Path, rows: list[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def prior_stage(steps: int, prior_from: str | None) -> dict[str, object]:
    history = [{"step": s, "val_denoising_mse": 1 / s} for s in range(100, steps + 1, 100)]
    return {"command": "training.prior", "args": {"prior_from": prior_from}, "history": history}


def test_a_continued_prior_goes_on_from_the_steps_of_the_priors_before_it(tmp_path: Path) -> None:
    head = {"command": "training.breed_head", "args": {}, "history": []}
    chain = [prior_stage(600, None), head, prior_stage(400, "runs/x/breed_head"), prior_stage(200, "runs/x/more")]
    for name, stages, expected in [
        ("fresh", chain[:1], 0),
        ("guide", [*chain[:2], prior_stage(300, None)], 0),  # a new denoiser starts at step 0
        ("more", chain[:3], 600),
        ("more-again", chain, 1000),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "card.json").write_text(json.dumps({"stages": stages}))
        assert prior_steps_before(tmp_path / name) == expected, name


def test_curves_draw_every_stage_of_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_jsonl(run / "vae" / "metrics.jsonl", [{"epoch": e, "val_psnr": 20 + e} for e in (1, 2, 3)])
    write_jsonl(run / "prior" / "prior-metrics.jsonl", prior_stage(500, None)["history"])
    write_jsonl(run / "head" / "breed-head-metrics.jsonl", [{"epoch": 1, "held_out_top1": 0.1, "held_out_top5": 0.3}])
    out = curves([str(run), "--out", str(tmp_path / "curves.png")])
    with Image.open(out) as figure:
        assert figure.width > 3 * figure.height // 2  # three panels side by side
    with pytest.raises(SystemExit, match="no stage folder with metrics"):
        curves([str(tmp_path / "vae-only-in-name")])
