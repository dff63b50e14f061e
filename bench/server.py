"""A real uvicorn serving a checkpoint on 127.0.0.1, for the scripts in bench/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextmanager
def running_server(checkpoint: Path, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start uvicorn on a free local port, wait for /ready, yield its URL and pid, stop it afterwards."""
    env = {**os.environ, "VAE_DOGS_CHECKPOINT": str(checkpoint), **(extra_env or {})}
    env.setdefault("VAE_DOGS_DEVICE", "cpu")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {server.returncode} before it was ready")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn was not ready after 120 s")
            time.sleep(0.1)
        yield Server(url, server.pid)
    finally:
        server.terminate()
        server.wait()
