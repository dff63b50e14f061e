"""Load test: many concurrent clients against a real uvicorn on 127.0.0.1, with and without micro-batching.

    .venv/bin/python -m bench.load                      # 32 clients, 60 s each run, /mix + /identify + /sample
    .venv/bin/python -m bench.load --only mix --seconds 30

For each setting of ``VAE_DOGS_BATCH_WINDOW_MS`` (default: 0 = off, then 2 ms) it starts the service
(``WEB_CONCURRENCY=2`` in the environment gives it two worker processes),
runs ``--clients`` closed-loop clients for ``--seconds`` (each sends its next request when the last one
is answered; the loop stops by itself at the deadline), and prints throughput, p50/p99 latency, the
count of non-2xx answers and the server's resident memory at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import time
from pathlib import Path

import httpx
from PIL import Image

from bench.server import ROOT, running_server


def jpeg() -> bytes:
    img = Image.effect_mandelbrot((160, 120), (-2, -1.2, 1, 1.2), 60).convert("RGB")
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), from Linux /proc, in MiB."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += rss_mib(int(child))
    return total


async def client_loop(
    client: httpx.AsyncClient,
    kinds: list[str],
    breeds: list[str],
    photo: bytes,
    deadline: float,
    rng: random.Random,
    latencies: dict[str, list[float]],
    failures: list[int],
) -> None:
    while time.monotonic() < deadline:
        kind = rng.choice(kinds)
        start = time.perf_counter()
        if kind == "mix":
            a, b = rng.sample(breeds, 2)
            response = await client.post("/mix", json={"breeds": {a: rng.random(), b: rng.random() + 0.01}, "n": 1})
        elif kind == "identify":
            response = await client.post("/identify", files={"file": ("dog.jpg", photo, "image/jpeg")})
        else:
            response = await client.get("/sample", params={"n": 4})
        latencies[kind].append((time.perf_counter() - start) * 1000)
        if not response.is_success:
            failures.append(response.status_code)


async def drive(url: str, clients: int, seconds: float, kinds: list[str]) -> dict[str, object]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        breeds = [b["name"] for b in (await client.get("/breeds")).json()["breeds"]]
        photo = jpeg()
        latencies: dict[str, list[float]] = {k: [] for k in kinds}
        failures: list[int] = []
        started = time.monotonic()
        await asyncio.gather(
            *(
                client_loop(client, kinds, breeds, photo, started + seconds, random.Random(i), latencies, failures)
                for i in range(clients)
            )
        )
        elapsed = time.monotonic() - started
    return {"elapsed": elapsed, "latencies": latencies, "failures": failures}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "dogs64")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument(
        "--only", choices=["mix", "identify", "sample"], default=None, help="one endpoint instead of the mix"
    )
    p.add_argument("--windows-ms", default="0,2", help="comma-separated VAE_DOGS_BATCH_WINDOW_MS values to compare")
    args = p.parse_args()
    kinds = [args.only] if args.only else ["mix", "identify", "sample"]
    print(f"{args.clients} clients x {args.seconds:g} s, endpoints {'/'.join(kinds)}, checkpoint {args.checkpoint}\n")
    print(
        "| batch window | requests/s | "
        + " | ".join(f"{k} p50 / p99" for k in kinds)
        + " | non-2xx | server RSS start → end |"
    )
    print("|---|---|" + "---|" * len(kinds) + "---|---|")
    for window in args.windows_ms.split(","):
        env = {"VAE_DOGS_BATCH_WINDOW_MS": window}
        with running_server(args.checkpoint, env) as server:
            rss_start = rss_mib(server.pid)
            result = asyncio.run(drive(server.url, args.clients, args.seconds, kinds))
            rss_end = rss_mib(server.pid)
        lat = result["latencies"]
        total = sum(len(v) for v in lat.values())  # type: ignore[union-attr]
        cells = " | ".join(
            f"{statistics.median(lat[k]):.0f} / {percentile(lat[k], 0.99):.0f} ms" if lat[k] else "-"  # type: ignore[index]
            for k in kinds
        )
        label = "off" if float(window) == 0 else f"{window} ms"
        print(
            f"| {label} | {total / result['elapsed']:.1f} | {cells} | {len(result['failures'])} | "  # type: ignore[arg-type, operator]
            f"{rss_start:.0f} → {rss_end:.0f} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
