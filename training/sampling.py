"""Choose a checkpoint's sampler settings against training photos, and write them into a copy.

    python -m training.sampling checkpoints/dogs64 --data ../shared/dogs --out runs/tuned --set guidance=4,5 eta=0,1
    python -m training.sampling runs/dogs64/prior-more --out runs/dogs64/sampling --guide-from runs/dogs64/guide \
        --set steps=8 guidance=5 guidance_rescale=0.5 eta=1 output_scale=0.85 autoguidance=2

``--set NAME=V1,V2 ...`` names the candidates of any field of ``model.sampler.SamplerSettings`` (the others stay the
checkpoint's). With several candidates, the same 1,000 balanced prior samples are drawn at each and compared with
as many **training** photos (never the held-out photos the evaluation reports on) by the Fréchet distance in the
pooled features of the checkpoint's own breed head (``training.fid.BreedHeadFD``: trained from scratch on this
project's photos). No ImageNet-trained network scores a generated dog here: Inception's FID and the identifier judge
the chosen setting in ``python -m training.evaluate``, after the fact. The lowest distance wins (one JSON line per
candidate, with how often the same head names the requested breed; about 3 minutes a candidate on 2 CPU cores;
``--data`` needed). With one candidate it is written as given, nothing measured. ``--guide-from`` first attaches
another checkpoint's diffusion prior (trained on the same VAE's latents: ``python -m training.prior``) as the
autoguidance guide; its weights are written with the checkpoint. The weights are otherwise byte-identical. The card
records the candidates and their distances in this stage's entry of ``stages`` and drops the source's
``evaluation`` (it was measured at the old settings): run ``python -m training.evaluate`` on the new folder.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from model import checkpoint
from model.prior import DogModel
from model.sampler import SamplerSettings
from training.common import command_args, git_commit, set_threads, settings_grid
from training.data import find_photos, load_images, to_tensor, training_ids
from training.fid import BreedHeadFD, balanced_samples, load_for_sweep, recognised_share


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.sampling", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="a checkpoint with a diffusion prior (python -m training.prior)")
    p.add_argument("--out", type=Path, required=True, help="output folder for the checkpoint with the chosen settings")
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="NAME=V1,V2",
        dest="assignments",
        help="candidate sampler settings (every combination is a candidate)",
    )
    p.add_argument(
        "--guide-from",
        type=Path,
        default=None,
        help="attach this checkpoint's diffusion prior (trained on the same VAE) as the autoguidance guide",
    )
    p.add_argument(
        "--data", type=Path, nargs="+", default=None, help="the data folders the checkpoint was trained on (to measure)"
    )
    p.add_argument("--samples", type=int, default=1000, help="prior samples (and training photos) per candidate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.out.resolve() == args.checkpoint.resolve():
        p.error("--out must be another folder: the source's evaluation would no longer match its settings")
    if args.samples < 2:
        p.error("--samples must be at least 2")
    if not (args.assignments or args.guide_from):
        p.error("give the candidates (--set NAME=V1,V2 ...) and/or a guide (--guide-from)")
    return args


def measure(
    model: DogModel,
    card: dict[str, Any],
    data: list[Path],
    candidates: list[SamplerSettings],
    n: int,
    seed: int,
    cache_dir: Path | None,
) -> list[dict[str, Any]]:
    """One row per candidate: the breed head's Fréchet distance between ``n`` balanced prior samples and ``n``
    training photos (seeded), and how often that head names the requested breed in the samples."""
    images = load_images(find_photos(data), model.vae.cfg.image_size, cache_dir)
    train_ids = sorted(training_ids(card, images))
    rows = torch.randperm(len(train_ids), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    judge = BreedHeadFD(model)
    real = judge.statistics(to_tensor(images.select([train_ids[r] for r in rows]).pixels), "breed head: photos")
    measured = []
    for sampling in candidates:
        samples, breeds = balanced_samples(model, n, seed, sampling=sampling)
        row = {
            "fd_breed_head": judge.distance(real, judge.statistics(samples, "breed head: prior samples")),
            "generated_breed_top1_vae_head": recognised_share(model, samples, breeds, head="vae"),
            "reference": "training",
            "sampling": sampling.to_dict(),
        }
        print(json.dumps(row), flush=True)
        measured.append(row)
    return measured


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    source_card = checkpoint.read_card(args.checkpoint)
    if source_card["prior"]["kind"] != "diffusion":
        raise SystemExit(f"{args.checkpoint} has a {source_card['prior']['kind']} prior: no sampler settings to choose")
    try:
        candidates = settings_grid(args.assignments, SamplerSettings.from_dict(source_card["sampling"]))
    except ValueError as err:
        raise SystemExit(str(err)) from err
    if len(candidates) > 1 and all(c.distilled for c in candidates):
        raise SystemExit(
            f"{args.checkpoint} samples with its distilled student, which takes no guidance settings: add distilled=0 "
            "to --set to choose the teacher's (and distil a new student from the result)"
        )
    # the written checkpoint carries the guide its rows were measured with
    model, card = load_for_sweep(args.checkpoint, candidates, args.device, args.guide_from)
    rows: list[dict[str, Any]] = []
    if len(candidates) > 1:
        if args.data is None:
            raise SystemExit(f"{len(candidates)} candidates to choose from: give --data to measure them")
        rows = measure(model, card, args.data, candidates, args.samples, args.seed, args.cache_dir)
        best = candidates[min(range(len(rows)), key=lambda i: rows[i]["fd_breed_head"])]
    else:
        best = candidates[0]
    before = model.sampling
    model = replace(model, sampling=best)  # the rest (the identifier too) as it was
    stage = {
        "command": "training.sampling",
        "args": command_args(args),
        "git_commit": git_commit(),
        "reference": "training photos, by the Fréchet distance in the checkpoint's own breed head's features",
        "rows": rows,
        "before": before.to_dict(),
        "chosen": best.to_dict(),
    }
    new_card = {k: v for k, v in card.items() if k not in ("evaluation", *checkpoint.REQUIRED_CARD_KEYS)}
    new_card["breeds"] = card["breeds"]
    new_card["stages"] = [*card.get("stages", []), stage]
    checkpoint.save(model, new_card, args.out)
    how = f" (breed-head distance {min(r['fd_breed_head'] for r in rows):.2f} to training photos)" if rows else ""
    print(f"chosen {best}{how}; was {before}; wrote {args.out}", flush=True)
    return stage


if __name__ == "__main__":
    main()
