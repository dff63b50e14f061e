from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import get_settings
from bench.server import running_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def client(identifier_checkpoint: Path) -> Iterator[TestClient]:
    """The real app (lifespan included) serving the tiny checkpoint with a diffusion prior and a breed identifier on
    the pretrained trunk, like the default."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VAE_DOGS_CHECKPOINT", str(identifier_checkpoint))
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


def uvicorn(checkpoint: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "VAE_DOGS_CHECKPOINT": str(checkpoint), "VAE_DOGS_DEVICE": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def server(tiny_checkpoint: Path) -> Iterator[str]:
    """A real uvicorn serving the tiny checkpoint (bench/server.py), its URL."""
    with running_server(tiny_checkpoint) as running:
        yield running.url
