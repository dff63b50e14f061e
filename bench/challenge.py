"""The challenge's answers and the README's generated pictures, from a running service.

    .venv/bin/python -m bench.challenge   # prints JSON; writes docs/sample.png, docs/challenge.png

Starts uvicorn on the checkpoint (``bench/server.py``), asks ``/identify`` and ``/ancestry`` about the
challenge's two photos in ``../shared/questions`` (the photos are only uploaded, never written anywhere; ancestry
both as served, by the identifier, and by the latent), and saves two *generated* figures for the README: 16 prior
samples (``GET /sample?n=16&seed=0``) and, per photo, four dogs of each ancestry mix and four of its most likely
breed (``POST /mix``, seeds 0-3).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

from bench.server import ROOT, running_server

QUESTIONS = ROOT.parent / "shared" / "questions"


def ask(client: httpx.Client, photo: Path) -> dict[str, Any]:
    def post(path: str) -> httpx.Response:
        response = client.post(path, files={"file": (photo.name, photo.read_bytes(), "image/png")})
        response.raise_for_status()
        return response

    return {
        "identify": post("/identify?top_k=5").json(),
        "ancestry": post("/ancestry?max_breeds=3").json(),
        "ancestry_by_latent": post("/ancestry?max_breeds=3&by=latent").json(),
    }


CAPTION_HEIGHT, CELL_WIDTH = 60, 290  # px: four caption lines (a title, a breed a line) above each 2x2 grid of dogs


def dogs_of(client: httpx.Client, weights: dict[str, float]) -> Image.Image:
    response = client.post("/mix", json={"breeds": weights, "n": 4, "seed": 0, "scale": 2})
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content)).convert("RGB")


def challenge_figure(client: httpx.Client, answers: dict[str, Any]) -> Image.Image:
    """One row per photo: four dogs of each ancestry mix, then four of its most likely breed (generated only)."""
    cells: list[list[tuple[str, str, Image.Image]]] = []
    for name, answer in answers.items():
        row = []
        for key in ("ancestry", "ancestry_by_latent"):
            mix = {part["breed"]: part["weight"] for part in answer[key]["composition"]}
            recipe = "\n+ ".join(f"{b} {w:.2f}" for b, w in mix.items())
            row.append((f"{name}: ancestry by the {answer[key]['by']}", recipe, dogs_of(client, mix)))
        top = answer["identify"]["breeds"][0]
        detail = f"{top['breed']} ({top['probability']:.2f})"
        cells.append([*row, (f"{name}: its most likely breed", detail, dogs_of(client, {top["breed"]: 1.0}))])
    height = max(image.height for row in cells for *_, image in row) + CAPTION_HEIGHT
    figure = Image.new("RGB", (CELL_WIDTH * len(cells[0]), height * len(cells)), "white")
    draw = ImageDraw.Draw(figure)
    for r, row in enumerate(cells):
        for c, (title, detail, image) in enumerate(row):
            x, y = c * CELL_WIDTH, r * height
            draw.text((x + 4, y + 3), title, fill="black")
            draw.text((x + 4, y + 15), detail, fill="black")
            figure.paste(image, (x, y + CAPTION_HEIGHT))
    return figure


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.challenge", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "dogs120")
    p.add_argument("--questions", type=Path, default=QUESTIONS, help="folder with caramelo.png and pythinho.png")
    p.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the generated pictures go")
    args = p.parse_args(argv)
    photos = {name: args.questions / f"{name}.png" for name in ("caramelo", "pythinho")}
    missing = [str(path) for path in photos.values() if not path.is_file()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: the challenge's photos live in ../shared/questions")
    with running_server(args.checkpoint) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        answers = {name: ask(client, path) for name, path in photos.items()}
        args.docs.mkdir(parents=True, exist_ok=True)
        sample = client.get("/sample", params={"n": 16, "seed": 0, "scale": 2})
        sample.raise_for_status()
        (args.docs / "sample.png").write_bytes(sample.content)
        challenge_figure(client, answers).save(args.docs / "challenge.png")
    print(json.dumps(answers, indent=1))
    return answers


if __name__ == "__main__":
    main()
