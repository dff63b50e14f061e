"""Side-by-side figure of several checkpoints' generated dogs: the same breeds, mixes and seeds for each.

    python -m training.compare runs/plain64 checkpoints/dogs64 --out docs/plain-vs-final.png

Each row is one breed (or 50/50 mix), with ``--columns`` samples from each checkpoint, one panel per
checkpoint, left to right. Only generated images: no photo is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from model import checkpoint, latent_ops
from model.imaging import grid

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


def side_by_side(folders: list[Path], rows: list[str], columns: int = 6, seed: int = 0, scale: int = 2,
                 titles: list[str] | None = None) -> Image.Image:
    panels = []
    names: list[str] | None = None
    for folder in folders:
        model, card = checkpoint.load(folder)
        model_names = [b["name"] for b in card["breeds"]]
        if names is not None and model_names != names:
            raise SystemExit(f"{folders[0]} and {folder} know different breeds")
        names = model_names
        images = torch.cat([latent_ops.mix(model, breed_weights(names, spec), n=columns, seed=seed + i)
                            for i, spec in enumerate(rows)])
        panels.append(grid(images, columns=columns, scale=scale))
    label_width, header = 230, 28
    width = label_width + sum(p.width for p in panels) + 20
    figure = Image.new("RGB", (width, panels[0].height + header), "white")
    draw = ImageDraw.Draw(figure)
    x = label_width
    for panel, title in zip(panels, titles or [str(f) for f in folders]):
        figure.paste(panel, (x, header))
        draw.text((x + 4, 8), title, fill="black")
        x += panel.width + 20
    row_height = panels[0].height / len(rows)
    for i, spec in enumerate(rows):
        label = spec.replace("+", " + ") + (" (50/50)" if "+" in spec else "")
        draw.text((6, header + int((i + 0.5) * row_height) - 6), label, fill="black")
    return figure


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", type=Path, nargs="+", help="checkpoint folders, one panel each, left to right")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--breeds", default=",".join(DEFAULT_BREEDS), help="comma-separated breeds, one row each")
    p.add_argument("--mixes", default=",".join(DEFAULT_MIXES), help="comma-separated a+b pairs, one 50/50 row each")
    p.add_argument("--columns", type=int, default=6, help="samples per row and checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--titles", default=None, help="comma-separated panel titles, one per checkpoint")
    args = p.parse_args(argv)
    rows = [r for r in args.breeds.split(",") + args.mixes.split(",") if r]
    titles = args.titles.split(",") if args.titles else None
    if titles is not None and len(titles) != len(args.checkpoints):
        raise SystemExit(f"{len(titles)} titles for {len(args.checkpoints)} checkpoints")
    figure = side_by_side(args.checkpoints, rows, args.columns, args.seed, titles=titles)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
