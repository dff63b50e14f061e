"""Side-by-side figure of several checkpoints' generated dogs: the same breeds, mixes and seeds for each.

    python -m training.compare runs/plain64 checkpoints/dogs64 --out docs/plain-vs-final.png
    python -m training.compare checkpoints/dogs64 --first-panel-of docs/plain-vs-stage1-vs-adversarial.png \
        --out docs/plain-vs-final.png

Each row is one breed (or 50/50 mix), with ``--columns`` samples from each checkpoint, one panel per
checkpoint, left to right; a transfer row (``--transfers golden_retriever>samoyed``) shows half as many generated dogs
of the first breed, then the same dogs transferred to the second (``/transfer``'s default strength). A row a
checkpoint cannot draw (a breed it does not know) is grey in its panel. Only generated images: no photo is read.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from model import checkpoint, latent_ops
from model.imaging import grid
from model.prior import DogModel

DEFAULT_BREEDS = ["beagle", "german_shepherd", "golden_retriever", "samoyed", "newfoundland", "dingo"]
DEFAULT_MIXES = ["beagle+samoyed", "golden_retriever+newfoundland", "chihuahua+malamute"]


def breed_weights(names: list[str], spec: str) -> torch.Tensor:
    """'beagle' or 'beagle+samoyed' (equal weights) -> (n_breeds,) weights."""
    weights = torch.zeros(len(names))
    for part in spec.split("+"):
        if part not in names:
            raise SystemExit(f"unknown breed {part!r}; known: {', '.join(names)}")
        weights[names.index(part)] += 1.0
    return weights / weights.sum()


def grey_cells(n: int, side: int) -> torch.Tensor:
    """``n`` empty (light grey) cells: a row a checkpoint cannot draw, or the end of an odd transfer row."""
    return torch.full((n, 3, side, side), 0.85)


def row_images(model: DogModel, names: list[str], spec: str, columns: int, seed: int) -> torch.Tensor:
    """A row's ``columns`` images: samples of a breed or 50/50 mix, or (``a>b``, at least 2 columns) dogs of ``a``
    then the same dogs transferred to ``b`` (a grey cell closes an odd row)."""
    if ">" not in spec:
        return latent_ops.mix(model, breed_weights(names, spec), n=columns, seed=seed)
    source, target = spec.split(">")
    dogs = latent_ops.mix(model, breed_weights(names, source), n=columns // 2, seed=seed)
    moved = latent_ops.transfer(model, dogs, breed_weights(names, target), seed=seed)
    return torch.cat([dogs, moved, grey_cells(columns % 2, model.vae.cfg.image_size)])


def breeds_of(spec: str) -> list[str]:
    return re.split(r"[+>]", spec)


LABEL_WIDTH, HEADER, GAP = 230, 28, 20  # px: row labels on the left, panel titles on top, space between panels


def side_by_side(
    folders: list[Path],
    rows: list[str],
    columns: int = 6,
    seed: int = 0,
    scale: int = 2,
    titles: list[str] | None = None,
    earlier: Image.Image | None = None,
) -> Image.Image:
    """One panel per checkpoint; ``earlier``: a figure of this command whose first panel (title included)
    goes on the left, for a checkpoint that is no longer kept (it must have the same rows and columns)."""
    loaded = [checkpoint.load(folder) for folder in folders]
    known = [[b["name"] for b in card["breeds"]] for _, card in loaded]
    everyone = sorted(set().union(*known))
    for part in (part for spec in rows for part in breeds_of(spec)):
        if part not in everyone:
            raise SystemExit(f"unknown breed {part!r}; known: {', '.join(everyone)}")
    panels = []
    for (model, _), names in zip(loaded, known, strict=True):
        side = model.vae.cfg.image_size
        drawable = [all(part in names for part in breeds_of(spec)) for spec in rows]
        images = torch.cat(
            [
                row_images(model, names, spec, columns, seed + i) if ok else grey_cells(columns, side)
                for i, (spec, ok) in enumerate(zip(rows, drawable, strict=True))
            ]
        )
        panel = grid(images, columns=columns, scale=scale)
        row_height = panel.height / len(rows)
        for i, ok in enumerate(drawable):
            if not ok:
                note = f"not among its {len(names)} breeds"
                ImageDraw.Draw(panel).text((8, int((i + 0.5) * row_height) - 6), note, fill="black")
        panels.append(panel)
    kept: Image.Image | None = None
    if earlier is not None:
        earlier = earlier.convert("RGB")
        end = LABEL_WIDTH + panels[0].width
        # Its first panel must end where ours would, followed by the white gap between panels.
        gap = earlier.crop((end, HEADER, end + GAP, earlier.height)) if earlier.width >= end + GAP else None
        if earlier.height != panels[0].height + HEADER or gap is None or gap.getextrema() != ((255, 255),) * 3:
            raise SystemExit(
                f"the earlier figure's first panel does not match ours ({panels[0].width}x{panels[0].height} px "
                f"under a {HEADER} px title, then a {GAP} px white gap): make both with the same "
                "--breeds, --mixes and --columns (and --transfers)"
            )
        kept = earlier.crop((LABEL_WIDTH, 0, end, earlier.height))
    width = LABEL_WIDTH + sum(p.width + GAP for p in panels) + (kept.width + GAP if kept else 0)
    figure = Image.new("RGB", (width, panels[0].height + HEADER), "white")
    draw = ImageDraw.Draw(figure)
    x = LABEL_WIDTH
    if kept is not None:
        figure.paste(kept, (x, 0))
        x += kept.width + GAP
    for panel, title in zip(panels, titles or [str(f) for f in folders], strict=False):
        figure.paste(panel, (x, HEADER))
        draw.text((x + 4, 8), title, fill="black")
        x += panel.width + GAP
    row_height = panels[0].height / len(rows)
    for i, spec in enumerate(rows):
        if ">" in spec:
            label = "{}, then to {}".format(*spec.split(">"))
        else:
            label = spec.replace("+", " + ") + (" (50/50)" if "+" in spec else "")
        draw.text((6, HEADER + int((i + 0.5) * row_height) - 6), label, fill="black")
    return figure


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", type=Path, nargs="+", help="checkpoint folders, one panel each, left to right")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--breeds", default=",".join(DEFAULT_BREEDS), help="comma-separated breeds, one row each")
    p.add_argument("--mixes", default=",".join(DEFAULT_MIXES), help="comma-separated a+b pairs, one 50/50 row each")
    p.add_argument(
        "--transfers",
        default="",
        help="comma-separated a>b pairs, one row each: generated dogs of a, then the same dogs transferred to b",
    )
    p.add_argument("--columns", type=int, default=6, help="samples per row and checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--titles", default=None, help="comma-separated panel titles, one per checkpoint")
    p.add_argument(
        "--first-panel-of",
        type=Path,
        default=None,
        metavar="FIGURE",
        help="an earlier figure of this command: its first panel goes on the left (for a checkpoint "
        "that is no longer kept; same --breeds, --mixes, --transfers and --columns)",
    )
    args = p.parse_args(argv)
    rows = [r for r in args.breeds.split(",") + args.mixes.split(",") + args.transfers.split(",") if r]
    if any(spec.count(">") > 1 or (">" in spec and "+" in spec) for spec in rows):
        raise SystemExit("a transfer is two breeds, a>b")
    if args.transfers and args.columns < 2:
        raise SystemExit("a transfer row needs --columns 2 or more: the dogs, then the same dogs transferred")
    titles = args.titles.split(",") if args.titles else None
    if titles is not None and len(titles) != len(args.checkpoints):
        raise SystemExit(f"{len(titles)} titles for {len(args.checkpoints)} checkpoints")
    earlier = Image.open(args.first_panel_of) if args.first_panel_of else None
    figure = side_by_side(args.checkpoints, rows, args.columns, args.seed, titles=titles, earlier=earlier)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
