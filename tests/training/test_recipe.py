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


def without_distilled(settings: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in settings.items() if k != "distilled"}


def test_the_default_recipe_names_every_stage_of_the_committed_checkpoint() -> None:
    stages = {s.name: s for s in read_recipe(ROOT / "recipes" / "dogs120.toml")}
    names = ["vae", "prior", "breed_head", "guide", "sampling", "student", "reader", "identifier", "evaluate"]
    assert list(stages) == names
    card = checkpoint.read_card(ROOT / "checkpoints" / "dogs120")
    # The 128-channel default's stages, then the recipe's from the 192-channel prior on (docs/experiments.md, issue
    # 38): its VAE, breed head and 96-channel guide were the 128-channel default's, so those stages were not rerun.
    assert [s["command"] for s in card["stages"]][-5:] == [
        "training.prior", "training.sampling", "training.distill", "training.reader", "training.identifier",
    ]  # fmt: skip
    prior, sampling, student, reader, identifier = card["stages"][-5:]
    assert {k: prior["args"][k] for k in stages["prior"].args} == stages["prior"].args
    assert student["args"]["steps"] == stages["student"].args["steps"]
    assert reader["args"]["mixes"] == stages["reader"].args["mixes"]
    assert identifier["args"]["embedding_dim"] == card["identifier"]["embedding_dim"] == 64
    assignments = (a.split("=") for a in stages["sampling"].args["set"])
    candidates = {name: [float(v) for v in values.split(",")] for name, values in assignments}
    teacher = without_distilled(card["sampling"])
    assert all(teacher[name] in values for name, values in candidates.items())
    best = min(sampling["rows"], key=lambda r: r["fd_breed_head"])  # the candidate nearest the photos was kept
    assert without_distilled(best["sampling"]) == without_distilled(sampling["chosen"]) == teacher
    assert card["sampling"]["distilled"] and card["prior"]["config"]["channels"] == prior["args"]["channels"] == 192


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_every_committed_recipe_reads(recipe: Path) -> None:
    stages = read_recipe(recipe)
    assert stages and stages[-1].command == "training.evaluate"
