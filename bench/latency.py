"""Latency of the main endpoints, in-process (ASGI, no network) and over HTTP to a real uvicorn.

    .venv/bin/python -m bench.latency                 # default checkpoint, 200 requests per endpoint
    .venv/bin/python -m bench.latency --requests 50 --checkpoint runs/dogs120/sampling

Prints a Markdown table of p50/p99 in milliseconds (sequential requests, one client: latency, not
throughput) and the HTTP server's resident memory after its requests. The photo for /identify is synthetic, so no
data set is needed.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

from bench.load import rss_mib
from bench.server import ROOT, running_server


def photo() -> bytes:
    img = Image.effect_mandelbrot((160, 120), (-2, -1.2, 1, 1.2), 60).convert("RGB")
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def cases(first_breeds: list[str]) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
    jpeg = photo()
    a, b = first_breeds[:2]
    return {
        "POST /mix (n=1)": lambda c: c.post("/mix", json={"breeds": {a: 0.5, b: 0.5}, "seed": 7, "n": 1}),
        "POST /identify": lambda c: c.post("/identify", files={"file": ("dog.jpg", jpeg, "image/jpeg")}),
        "GET /sample (n=16)": lambda c: c.get("/sample", params={"n": 16, "seed": 1}),
    }


def measure(client: httpx.Client, requests: int) -> dict[str, tuple[float, float]]:
    breeds = [b["name"] for b in client.get("/breeds").json()["breeds"]]
    results = {}
    for name, call in cases(breeds).items():
        for _ in range(5):  # warm-up
            call(client).raise_for_status()
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            call(client).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        results[name] = (statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))])
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "dogs120")
    p.add_argument("--requests", type=int, default=200)
    args = p.parse_args()
    os.environ["VAE_DOGS_CHECKPOINT"] = str(args.checkpoint)
    os.environ.setdefault("VAE_DOGS_DEVICE", "cpu")

    from fastapi.testclient import TestClient

    from app.main import app

    with TestClient(app) as client:
        in_process = measure(client, args.requests)

    with running_server(args.checkpoint) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        over_http = measure(client, args.requests)
        rss = rss_mib(server.pid)

    print(
        f"checkpoint {args.checkpoint}, {args.requests} sequential requests per endpoint, {os.cpu_count()} CPU cores\n"
    )
    print("| endpoint | in-process p50 | in-process p99 | HTTP p50 | HTTP p99 |")
    print("|---|---|---|---|---|")
    for name in in_process:
        (ip50, ip99), (h50, h99) = in_process[name], over_http[name]
        print(f"| `{name}` | {ip50:.1f} ms | {ip99:.1f} ms | {h50:.1f} ms | {h99:.1f} ms |")
    print(f"\nthe uvicorn server's resident memory after its requests: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
