from __future__ import annotations

from pathlib import Path

import pytest

from model import checkpoint
from training.recipe import main as run_recipe
from training.recipe import read_recipe

ROOT = Path(__file__).resolve().parents[2]

TINY = """
[[stage]]
name = "vae"
command = "training"
[stage.args]
epochs = 2
stop_after = 1
batch_size = 8
channels = "8,16,16,32"
classifier_channels = "8,16,16,32"
latent_channels = 2
min_validation = 2
no_progress = true

[[stage]]
name = "prior"
command = "training.prior"
init_from = "vae"
args = { steps = 5, batch_size = 16, channels = 8, blocks = 1, log_every = 5, no_progress = true }

[[stage]]
name = "sampling"
command = "training.sampling"
source = "prior"
args = { set = ["steps=2", "guidance=3"] }

[[stage]]
name = "evaluate"
command = "training.evaluate"
source = "sampling"
args = { fid_samples = 0 }
"""


def test_a_recipe_runs_its_stages_in_order_and_skips_finished_ones(
    tmp_path: Path, folders_data: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    common = [str(recipe), "--data", str(folders_data), "--out", str(tmp_path / "run"), "--cache-dir", str(cache_dir)]
    assert run_recipe([*common, "--dry-run"]) == ["to run"] * 4
    assert "--init-from " + str(tmp_path / "run" / "vae") in capsys.readouterr().out
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
    assert run_recipe(common) == ["to run"] * 4
    model, card = checkpoint.load(tmp_path / "run" / "sampling")
    assert model.sampling.steps == 2 and model.sampling.guidance == 3 and "evaluation" in card
    assert [s["command"] for s in card["stages"]] == ["training", "training.prior", "training.sampling"]
    assert run_recipe([*common, "--dry-run"]) == ["done"] * 4  # a second run has nothing left to do


def test_a_stopped_training_stage_is_resumed(tmp_path: Path, folders_data: Path, cache_dir: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY.replace("stop_after = 1\n", ""))
    (tmp_path / "run" / "vae").mkdir(parents=True)
    (tmp_path / "run" / "vae" / "resume.json").write_text("{}")
    states = run_recipe([str(recipe), "--data", str(folders_data), "--out", str(tmp_path / "run"), "--dry-run"])
    assert states[0] == "resumable"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[stage]]\nname = "a"\ncommand = "rm"\n', "needs a name and a command"),
        ('[[stage]]\nname = "a"\ncommand = "training.prior"\ninit_from = "b"\n', "not an earlier stage"),
        ('[[stage]]\nname = "a"\ncommand = "training.evaluate"\n', "needs a source stage"),
        ("", r"has no \[\[stage\]\]"),
    ],
)
def test_bad_recipes_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(SystemExit, match=message):
        read_recipe(tmp_path / "bad.toml")


def test_the_default_recipe_names_every_stage_of_the_committed_checkpoint() -> None:
    stages = read_recipe(ROOT / "recipes" / "dogs120.toml")
    names = ["vae", "prior", "breed_head", "guide", "sampling", "student", "reader", "identifier", "evaluate"]
    assert [s.name for s in stages] == names
    card = checkpoint.read_card(ROOT / "checkpoints" / "dogs120")
    # mix_strength was set by a second, single-candidate sampling stage, and the breed space by a second identifier
    # stage on the committed checkpoint (the recipe's comments say so).
    assert [s["command"] for s in card["stages"]] == [
        "training", "training.prior", "training.breed_head", "training.sampling", "training.sampling",
        "training.distill", "training.reader", "training.identifier", "training.identifier",
    ]  # fmt: skip
    assert card["stages"][-1]["args"]["embedding_dim"] == card["identifier"]["embedding_dim"] == 64
    assert card["stages"][4]["rows"] == [] and card["stages"][4]["chosen"]["mix_strength"] == 2
    candidates = {
        name: [float(v) for v in values.split(",")]
        for name, values in (a.split("=") for a in next(s for s in stages if s.name == "sampling").args["set"])
    }
    teacher = {k: v for k, v in card["sampling"].items() if k != "distilled"}
    assert all(teacher[name] in values for name, values in candidates.items())
    rows = card["stages"][3]["rows"]  # one per candidate; the lowest FID was kept
    assert len(rows) == 4
    best = min(rows, key=lambda r: r["fid_prior_samples"])
    assert all(best["sampling"][k] == v for k, v in teacher.items() if k != "mix_strength")


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_every_committed_recipe_reads(recipe: Path) -> None:
    stages = read_recipe(recipe)
    assert stages and stages[-1].command == "training.evaluate"
