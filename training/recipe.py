"""Run a recipe: the stages that make a checkpoint, in order, each one command with its settings.

    python -m training.recipe recipes/dogs64.toml --data ../shared/dogs --out runs/dogs64 --dry-run
    python -m training.recipe recipes/dogs64.toml --data ../shared/dogs --out runs/dogs64

A recipe is a TOML file of ``[[stage]]`` tables: ``name`` (its folder under ``--out``), ``command`` (one of
``COMMANDS``), ``args`` (the command's flags: underscores for dashes, ``true`` for a bare flag, a list for several
values) and the earlier stages it reads (``init_from``, ``prior_from``, ``guide_from``, ``source``). Each stage runs as
``python -m <command>`` with ``--data``, and writes ``<out>/<name>/.done`` when it has finished, so a second run skips
it; a stopped ``training``, ``training.prior``, ``training.distill`` or ``training.breed_head`` stage is resumed from
its last epoch or check (``--resume``), any other stopped stage starts again. The stages show their own progress
bars; the recipe prints each stage's command before it runs.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMMANDS = (
    "training",
    "training.prior",
    "training.distill",
    "training.reader",
    "training.breed_head",
    "training.identifier",
    "training.sampling",
    "training.evaluate",
)
# Resumed from their last epoch or check; the others start again.
RESUMABLE = ("training", "training.prior", "training.distill", "training.breed_head")
STAGE_LINKS = ("init_from", "prior_from", "guide_from")
DONE = ".done"


@dataclass
class Stage:
    name: str
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # flag -> earlier stage
    source: str | None = None  # the positional checkpoint of training.sampling and training.evaluate


def read_recipe(path: Path) -> list[Stage]:
    """The stages of a recipe file, checked: known commands, unique names, links to earlier stages only."""
    try:
        tables = tomllib.loads(path.read_text()).get("stage", [])
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SystemExit(f"cannot read recipe {path}: {err}") from err
    stages: list[Stage] = []
    for i, table in enumerate(tables, 1):
        unknown = set(table) - {"name", "command", "args", "source", *STAGE_LINKS}
        if unknown or "name" not in table or table.get("command") not in COMMANDS:
            raise SystemExit(
                f"{path}: stage {i} needs a name and a command out of {', '.join(COMMANDS)}"
                + (f"; unknown keys {sorted(unknown)}" if unknown else "")
            )
        links = {k: table[k] for k in STAGE_LINKS if k in table}
        stage = Stage(table["name"], table["command"], dict(table.get("args", {})), links, table.get("source"))
        earlier = {s.name for s in stages}
        for ref in [*links.values(), *([stage.source] if stage.source else [])]:
            if ref not in earlier:
                raise SystemExit(f"{path}: stage {stage.name!r} reads {ref!r}, which is not an earlier stage")
        if stage.name in earlier:
            raise SystemExit(f"{path}: two stages are called {stage.name!r}")
        if stage.command in ("training.sampling", "training.evaluate") and not stage.source:
            raise SystemExit(f"{path}: stage {stage.name!r} ({stage.command}) needs a source stage")
        stages.append(stage)
    if not stages:
        raise SystemExit(f"{path} has no [[stage]]")
    return stages


def flags(args: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            continue
        elif isinstance(value, list):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def stage_command(stage: Stage, out: Path, data: list[Path], cache_dir: Path | None, resume: bool) -> list[str]:
    folder = out / stage.name
    argv = [sys.executable, "-m", stage.command]
    if stage.source:
        argv.append(str(out / stage.source))
    argv += ["--data", *map(str, data)]
    if stage.command != "training.evaluate":
        argv += ["--out", str(folder)]
    argv += [f for k, ref in stage.links.items() for f in (f"--{k.replace('_', '-')}", str(out / ref))]
    argv += flags(stage.args)
    if cache_dir is not None:
        argv += ["--cache-dir", str(cache_dir)]
    if resume:
        argv.append("--resume")
    return argv


def state_of(stage: Stage, out: Path) -> str:
    folder = out / stage.name
    if (folder / DONE).is_file():
        return "done"
    if stage.command in RESUMABLE and (folder / "resume.json").is_file():
        return "resumable"
    return "to run"


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(prog="python -m training.recipe", description=__doc__.split("\n")[0])
    p.add_argument("recipe", type=Path, help="a recipe file, e.g. recipes/dogs64.toml")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="the data folders every stage reads")
    p.add_argument("--out", type=Path, required=True, help="the run folder: one subfolder per stage")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache (default ~/.cache/vae-dogs)")
    p.add_argument("--dry-run", action="store_true", help="list the stages, their state and commands; run nothing")
    args = p.parse_args(argv)
    stages = read_recipe(args.recipe)
    states = []
    for i, stage in enumerate(stages, 1):
        state = state_of(stage, args.out)
        command = stage_command(stage, args.out, args.data, args.cache_dir, resume=state == "resumable")
        states.append(state)
        print(f"[{i}/{len(stages)}] {stage.name} ({state}): {shlex.join(['python', *command[1:]])}", flush=True)
        if args.dry_run or state == "done":
            continue
        result = subprocess.run(command)
        if result.returncode != 0:
            raise SystemExit(f"stage {stage.name!r} failed (exit {result.returncode}); run the recipe again to go on")
        target = args.out / (stage.source if stage.command == "training.evaluate" else stage.name)
        (args.out / stage.name).mkdir(parents=True, exist_ok=True)
        (args.out / stage.name / DONE).write_text(f"{target}\n")
    return states


if __name__ == "__main__":
    main()
