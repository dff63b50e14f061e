"""A real uvicorn process: start-up failures are one line, and the HTTP path works end to end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.server import free_port, running_server
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


def busy_server(checkpoint: Path, **env: str):  # type: ignore[no-untyped-def]
    """One worker and 1,000 DDIM steps a dog: a 64-dog /sample keeps the worker busy for seconds."""
    return running_server(
        checkpoint, {"VAE_DOGS_WORKERS": "1", "VAE_DOGS_SAMPLING_STEPS": "1000", "VAE_DOGS_MAX_SCALE": "8", **env}
    )


def in_background(url: str, **params: object) -> tuple[threading.Thread, list[httpx.Response | Exception]]:
    answers: list[httpx.Response | Exception] = []

    def get() -> None:
        try:
            answers.append(httpx.get(f"{url}/sample", params=params, timeout=120))
        except Exception as err:  # the test reads it
            answers.append(err)

    thread = threading.Thread(target=get)
    thread.start()
    return thread, answers


def wait_until_busy(url: str) -> None:
    for _ in range(200):
        if "vae_dogs_queued_work_seconds 0.0" not in httpx.get(f"{url}/metrics").text:
            return
        time.sleep(0.05)
    raise AssertionError("the long request never started")


def test_health_answers_while_every_worker_is_busy(tiny_diffusion_checkpoint: Path) -> None:
    with busy_server(tiny_diffusion_checkpoint) as server:
        thread, answers = in_background(server.url, n=64, seed=1)
        wait_until_busy(server.url)
        assert httpx.get(f"{server.url}/health", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{server.url}/ready", timeout=5).json() == {"status": "ready"}
        assert thread.is_alive()  # both answered while the sample was still being drawn
        thread.join()
        assert answers[0].status_code == 200  # type: ignore[union-attr]


def test_a_full_queue_is_a_503_with_retry_after_at_once(tiny_diffusion_checkpoint: Path) -> None:
    with busy_server(tiny_diffusion_checkpoint, VAE_DOGS_MAX_QUEUED_S="0.000001") as server:
        thread, _ = in_background(server.url, n=64, seed=1)
        wait_until_busy(server.url)
        refused = httpx.post(f"{server.url}/mix", json={"breeds": {"beagle": 1}}, timeout=5)
        assert thread.is_alive()
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "busy" in refused.json()["detail"]
        thread.join()


def test_the_timeout_stops_the_work(tiny_diffusion_checkpoint: Path) -> None:
    with busy_server(tiny_diffusion_checkpoint, VAE_DOGS_INFERENCE_TIMEOUT_S="0.5") as server:
        answer = httpx.get(f"{server.url}/sample", params={"n": 64, "seed": 1}, timeout=60)
        assert answer.status_code == 503 and "Retry-After" in answer.headers
        assert "longer than the 0.5-s limit" in answer.json()["detail"]
        # The worker is free again: a photo is answered (it would wait behind the 64 dogs, and time out, otherwise).
        photo = {"file": ("dog.png", image_bytes(), "image/png")}
        assert httpx.post(f"{server.url}/identify", files=photo, timeout=60).status_code == 200


def test_an_oversized_upload_is_refused_before_it_is_read(tiny_checkpoint: Path) -> None:
    with running_server(tiny_checkpoint, {"VAE_DOGS_MAX_BODY_BYTES": "100000"}) as server:
        sent = 0

        def body():  # type: ignore[no-untyped-def]
            nonlocal sent
            yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
            for _ in range(1000):  # 64 MB of photo, chunked: no Content-Length to refuse it by
                sent += 65536
                yield b"\0" * 65536

        headers = {"Content-Type": "multipart/form-data; boundary=x"}
        try:
            answer = httpx.post(f"{server.url}/identify", content=body(), headers=headers, timeout=30)
            assert answer.status_code == 413 and "100,000-byte limit" in answer.json()["detail"]
        except httpx.HTTPError:
            pass  # the server may close the connection while the client is still sending
        assert sent < 64 * 65536  # far less than the 64 MB was sent before the answer
        declared = httpx.post(
            f"{server.url}/decode", content=b"{" + b" " * 200_000 + b"}", headers={"Content-Type": "application/json"}
        )
        assert declared.status_code == 413


@contextmanager
def vae_dogs_serve(checkpoint: Path, **settings: str) -> Iterator[int]:
    """``vae-dogs-serve`` (uvicorn with the service's connection settings) on a free port, ready; yields the port."""
    port = free_port()
    env = {**os.environ, "VAE_DOGS_CHECKPOINT": str(checkpoint), "VAE_DOGS_DEVICE": "cpu", "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-c", "from app.main import serve; serve()"], env=env | settings)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_vae_dogs_serve_closes_connections_that_send_their_head_too_slowly(tiny_checkpoint: Path) -> None:
    with vae_dogs_serve(tiny_checkpoint, VAE_DOGS_HEAD_TIMEOUT_S="1") as port:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
        slow.settimeout(30)
        assert slow.recv(1024) == b""  # closed by the server (a hang would raise socket.timeout)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 200 and "server" not in health.headers  # others still served; no banner


def test_vae_dogs_serve_closes_connections_whose_body_never_comes(tiny_checkpoint: Path) -> None:
    """Every connection slot held by a client that declares a body and sends a few bytes of it: the server closes
    them when the body deadline passes, and /health answers again."""
    limit = 8  # uvicorn serves limit - 1 connections at once; the next request gets its bare 503
    with vae_dogs_serve(tiny_checkpoint, VAE_DOGS_BODY_TIMEOUT_S="2", VAE_DOGS_LIMIT_CONCURRENCY=str(limit)) as port:
        # a body under the 64 KiB cap of /mix, of which only five bytes ever come
        head = b"POST /mix HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000\r\n\r\n"
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(limit - 1)]
        try:
            for slow in sockets:
                slow.sendall(head + b'{"bre')
            started = time.monotonic()
            for slow in sockets:
                slow.settimeout(30)
                assert slow.recv(1024) == b""  # closed by the server, not answered and not left hanging
            assert time.monotonic() - started < 15
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        finally:
            for slow in sockets:
                slow.close()
