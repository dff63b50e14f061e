from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import get_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def client(tiny_checkpoint: Path) -> Iterator[TestClient]:
    """The real app (lifespan included) serving the tiny synthetic checkpoint."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VAE_DOGS_CHECKPOINT", str(tiny_checkpoint))
    mp.setenv("VAE_DOGS_DEVICE", "cpu")
    mp.setenv("VAE_DOGS_MAX_UPLOAD_BYTES", str(200_000))
    get_settings.cache_clear()
    from app.main import app

    with TestClient(app) as test_client:
        yield test_client
    mp.undo()
    get_settings.cache_clear()


def image_bytes(mode: str = "RGB", size: tuple[int, int] = (80, 60), fmt: str = "PNG", **save: object) -> bytes:
    colour = {"RGB": (170, 110, 40), "RGBA": (170, 110, 40, 128), "L": 120, "CMYK": (0, 40, 80, 20), "P": 3}[mode]
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uvicorn(checkpoint: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "VAE_DOGS_CHECKPOINT": str(checkpoint), "VAE_DOGS_DEVICE": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.fixture
def server(tiny_checkpoint: Path) -> Iterator[str]:
    port = free_port()
    proc = uvicorn(tiny_checkpoint, port)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"uvicorn exited: {proc.stdout.read()}")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            pytest.fail("uvicorn did not become ready in 120 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
