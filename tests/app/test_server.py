"""A real uvicorn process: start-up failures are one line, and the HTTP path works end to end."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.server import free_port
from tests.app.conftest import image_bytes, uvicorn


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_bad_checkpoint_fails_start_up_in_one_line(tmp_path: Path, tiny_checkpoint: Path, problem: str) -> None:
    folder = tmp_path / "ckpt"
    if problem == "corrupt":
        folder.mkdir()
        (folder / "card.json").write_text((tiny_checkpoint / "card.json").read_text())
        (folder / "model.safetensors").write_bytes(b"garbage")
    proc = uvicorn(folder, free_port())
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    assert errors[0].startswith("ERROR:    vae-dogs cannot start:") and str(folder) in errors[0]
    assert len(errors) == 2  # the reason, then uvicorn's "Application startup failed. Exiting."


def test_mix_and_identify_over_http(server: str) -> None:
    mixed = httpx.post(f"{server}/mix", json={"breeds": {"beagle": 0.5, "samoyed": 0.5}, "seed": 7, "n": 2}, timeout=60)
    assert mixed.status_code == 200 and mixed.content.startswith(b"\x89PNG")
    found = httpx.post(f"{server}/identify", files={"file": ("dog.png", image_bytes(), "image/png")}, timeout=60)
    assert found.status_code == 200
    assert {b["breed"] for b in found.json()["breeds"]} == {"beagle", "gordon_setter", "samoyed"}
