"""Load and abuse test against a real uvicorn on 127.0.0.1: mixed traffic, then the two hostile cases.

    .venv/bin/python -m bench.load                     # 32 clients x 60 s of /mix, /identify, /sample?n=4 and
                                                       # /identify with a large photo; a /health prober
    .venv/bin/python -m bench.load --kinds mix --seconds 30
    .venv/bin/python -m bench.load --seconds 600       # the 10-minute run for memory

Closed-loop clients: each sends its next request when the last one is answered, and after a 503 waits the
``Retry-After`` it was given (as a well-behaved client does). Printed: per endpoint the answered requests per second,
p50 / p99 latency of the 200s, and the 503s; ``/health`` p50 / p99 / max from a prober that asks every 50 ms; the
count of other 5xx (should be 0); the server's resident memory when warm and at the end. Then:

- *abandoned ancestry*: four ``/ancestry?max_breeds=10`` requests whose clients give up after 1 s, then one
  ``/identify``: how long it takes (the abandoned work must stop, not run on for seconds);
- *oversized upload*: 500 MB streamed (chunked, no Content-Length) to ``/identify``: how much was sent before the
  server answered or closed the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.server import ROOT, running_server

KINDS = ("mix", "identify", "sample", "upload")


def jpeg(width: int = 160, height: int = 120) -> bytes:
    img = Image.effect_mandelbrot((width, height), (-2, -1.2, 1, 1.2), 60).convert("RGB")
    if width > 1000:  # texture, so that the JPEG is as large as a real photo of that size
        noise = np.random.default_rng(0).integers(0, 40, (height, width, 3), dtype=np.uint8)
        img = Image.fromarray(np.asarray(img) // 2 + noise)
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


async def request(
    client: httpx.AsyncClient, kind: str, breeds: list[str], photos: dict[str, bytes], rng: random.Random
):
    if kind == "mix":
        a, b = rng.sample(breeds, 2)
        return await client.post("/mix", json={"breeds": {a: rng.random(), b: rng.random() + 0.01}, "n": 1})
    if kind == "sample":
        return await client.get("/sample", params={"n": 4})
    photo = photos["large" if kind == "upload" else "small"]
    return await client.post("/identify", files={"file": ("dog.jpg", photo, "image/jpeg")})


async def client_loop(client, kinds, breeds, photos, deadline, rng, latencies, statuses) -> None:  # type: ignore[no-untyped-def]
    while time.monotonic() < deadline:
        kind = rng.choice(kinds)
        start = time.perf_counter()
        try:
            response = await request(client, kind, breeds, photos, rng)
        except httpx.HTTPError as err:
            statuses[kind][type(err).__name__] += 1
            continue
        statuses[kind][response.status_code] += 1
        if response.status_code == 200:
            latencies[kind].append((time.perf_counter() - start) * 1000)
        elif response.status_code == 503 and "retry-after" in response.headers:
            statuses[kind]["503 with Retry-After"] += 1
            await asyncio.sleep(min(float(response.headers["retry-after"]), max(0.0, deadline - time.monotonic())))


async def health_prober(url: str, deadline: float, latencies: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            await client.get("/health")
            latencies.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.05)


async def drive(url: str, clients: int, seconds: float, kinds: list[str]) -> dict[str, object]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        breeds = [b["name"] for b in (await client.get("/breeds")).json()["breeds"]]
        photos = {"small": jpeg(), "large": jpeg(5000, 3750)}  # 18.75 Mpx
        latencies: dict[str, list[float]] = {k: [] for k in kinds}
        statuses: dict[str, Counter] = {k: Counter() for k in kinds}
        health: list[float] = []
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(
            health_prober(url, deadline, health),
            *(
                client_loop(client, kinds, breeds, photos, deadline, random.Random(i), latencies, statuses)
                for i in range(clients)
            ),
        )
        elapsed = time.monotonic() - started
    return {"elapsed": elapsed, "latencies": latencies, "statuses": statuses, "health": health}


async def abandoned_ancestry(url: str) -> tuple[float, int]:
    """Four /ancestry calls abandoned after 1 s, then the time of one /identify (ms) and its status."""
    photo = jpeg()
    async with httpx.AsyncClient(base_url=url, timeout=1) as impatient:

        async def give_up() -> None:
            try:
                await impatient.post("/ancestry", params={"max_breeds": 10}, files={"file": ("d.jpg", photo)})
            except httpx.TimeoutException:
                pass

        await asyncio.gather(*(give_up() for _ in range(4)))
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        start = time.perf_counter()
        response = await client.post("/identify", files={"file": ("d.jpg", photo, "image/jpeg")})
        return (time.perf_counter() - start) * 1000, response.status_code


def oversized_upload(url: str, total: int = 500 * 1024 * 1024) -> tuple[int, str, float]:
    """Stream ``total`` bytes to /identify without a Content-Length: bytes sent, the outcome, seconds."""
    sent, chunk = 0, b"\0" * (1 << 20)

    def body():  # type: ignore[no-untyped-def]
        nonlocal sent
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        while sent < total:
            sent += len(chunk)
            yield chunk

    start = time.perf_counter()
    try:
        response = httpx.post(
            f"{url}/identify", content=body(), headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=60
        )
        outcome = str(response.status_code)
    except httpx.HTTPError as err:
        outcome = f"connection closed by the server ({type(err).__name__})"
    return sent, outcome, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "dogs120")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    p.add_argument("--no-abuse", action="store_true", help="skip the abandoned-ancestry and oversized-upload cases")
    args = p.parse_args()
    kinds = args.kinds.split(",")
    if not set(kinds) <= set(KINDS):
        p.error(f"--kinds: choose from {', '.join(KINDS)}")
    print(f"{args.clients} clients x {args.seconds:g} s, {', '.join(kinds)}; checkpoint {args.checkpoint}\n")
    with running_server(args.checkpoint) as server:
        rss_warm = rss_mib(server.pid)
        result = asyncio.run(drive(server.url, args.clients, args.seconds, kinds))
        rss_end = rss_mib(server.pid)
        lat, statuses, elapsed = result["latencies"], result["statuses"], result["elapsed"]
        print("| endpoint | answered /s | 200 p50 / p99 | 200s | 503 with Retry-After | other |")
        print("|---|---|---|---|---|---|")
        errors = 0
        for kind in kinds:
            counts = statuses[kind]  # type: ignore[index]
            other = {k: v for k, v in counts.items() if k not in (200, 503, "503 with Retry-After")}
            errors += sum(v for k, v in other.items() if isinstance(k, int) and k >= 500)
            answered = sum(v for k, v in counts.items() if isinstance(k, int))
            cells = f"{statistics.median(lat[kind]):.0f} / {percentile(lat[kind], 0.99):.0f} ms" if lat[kind] else "-"  # type: ignore[index]
            print(
                f"| {kind} | {answered / elapsed:.1f} | {cells} | {counts[200]} | {counts['503 with Retry-After']} | "  # type: ignore[operator]
                f"{dict(other) or '-'} |"
            )
        health = result["health"]
        print(
            f"\n/health: p50 {statistics.median(health):.1f} ms, p99 {percentile(health, 0.99):.1f} ms, "  # type: ignore[arg-type]
            f"max {max(health):.1f} ms over {len(health)} probes; other 5xx: {errors}; "  # type: ignore[arg-type]
            f"server RSS warm {rss_warm:.0f} MiB → end {rss_end:.0f} MiB ({(rss_end / rss_warm - 1) * 100:+.0f} %)"
        )
        if args.no_abuse:
            return
        time.sleep(2)  # let the queue drain
        ms, status = asyncio.run(abandoned_ancestry(server.url))
        print(f"abandoned ancestry: /identify after four abandoned /ancestry?max_breeds=10 took {ms:.0f} ms ({status})")
        sent, outcome, seconds = oversized_upload(server.url)
        print(
            f"oversized upload: {sent / 2**20:.0f} MiB of 500 MiB sent before the answer: {outcome} in {seconds:.1f} s"
        )


if __name__ == "__main__":
    main()
