"""The challenge's answers and the README's generated pictures, from a running service.

    .venv/bin/python -m bench.challenge   # prints JSON; writes docs/sample.png, docs/caramelo-ancestry-mix.png

Starts uvicorn on the checkpoint (``bench/server.py``), asks ``/identify`` and ``/ancestry`` about the
challenge's two photos in ``../shared/questions`` (the photos are only uploaded, never written anywhere),
and saves two *generated* images for the README: 16 prior samples (``GET /sample?n=16&seed=0``) and the
dog of the caramelo's ancestry mix (``POST /ancestry?image=true``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx

from bench.server import ROOT, running_server

QUESTIONS = ROOT.parent / "shared" / "questions"


def ask(client: httpx.Client, photo: Path) -> dict[str, Any]:
    def post(path: str) -> httpx.Response:
        response = client.post(path, files={"file": (photo.name, photo.read_bytes(), "image/png")})
        response.raise_for_status()
        return response

    return {"identify": post("/identify?top_k=5").json(), "ancestry": post("/ancestry?max_breeds=3").json()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.challenge", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "dogs64")
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
        caramelo = photos["caramelo"]
        mix = client.post(
            "/ancestry?max_breeds=3&image=true&scale=4",
            files={"file": (caramelo.name, caramelo.read_bytes(), "image/png")},
        )
        mix.raise_for_status()
        (args.docs / "caramelo-ancestry-mix.png").write_bytes(mix.content)
    print(json.dumps(answers, indent=1))
    return answers


if __name__ == "__main__":
    main()
