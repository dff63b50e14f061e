"""POST /encode, /decode and /identify."""

import math

import pytest
from fastapi.testclient import TestClient

from tests.app.conftest import image_bytes, png_size


def test_encode_returns_posterior_and_breeds(client: TestClient) -> None:
    body = client.post("/encode", files={"file": ("dog.png", image_bytes(), "image/png")}).json()
    assert len(body["mean"]) == len(body["log_var"]) == 32  # 2 channels at 4x4
    probabilities = [b["probability"] for b in body["breeds"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-4)


def test_decode_round_trip_from_encode(client: TestClient) -> None:
    mean = client.post("/encode", files={"file": ("dog.png", image_bytes(), "image/png")}).json()["mean"]
    response = client.post("/decode", json={"latents": [mean, [0.0] * 32], "scale": 2})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert png_size(response.content) == (2 * (2 * 66 + 2), 2 * (66 + 2))
    with_breed = client.post("/decode", json={"latents": [mean], "breeds": {"samoyed": 1}})
    assert png_size(with_breed.content) == (64, 64)


@pytest.mark.parametrize(
    "latents, message",
    [
        ([[0.0] * 3], "32 numbers"),
        ([], "at least 1"),
        ([[0.0] * 32] * 65, "at most 64"),
        ([[1e300] + [0.0] * 31], "within ±1000"),  # finite, but the decoder would overflow to NaN
    ],
)
def test_decode_rejects_bad_latents(client: TestClient, latents: list, message: str) -> None:
    response = client.post("/decode", json={"latents": latents})
    assert response.status_code == 422 and message in response.text


def test_decode_rejects_nan_latents(client: TestClient) -> None:
    response = client.post(
        "/decode", content=b'{"latents": [[NaN' + b", 0" * 31 + b"]]}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "finite" in response.text


def test_identify_top_k_best_first(client: TestClient) -> None:
    response = client.post("/identify?top_k=2", files={"file": ("dog.jpg", image_bytes(fmt="JPEG"), "image/jpeg")})
    breeds = response.json()["breeds"]
    assert len(breeds) == 2
    assert breeds[0]["probability"] >= breeds[1]["probability"]
    everything = client.post("/identify?top_k=100", files={"file": ("dog.png", image_bytes(), "image/png")}).json()
    assert len(everything["breeds"]) == 3
    assert math.isclose(sum(b["probability"] for b in everything["breeds"]), 1.0, abs_tol=1e-4)


def test_identify_learned_the_synthetic_breeds(client: TestClient) -> None:
    """The tiny model saw white round blobs labelled samoyed; a photo of one should not rank it last."""
    import io
    import random

    from tests.conftest import synthetic_dog

    rng = random.Random(99)
    hits = 0
    for _ in range(6):
        buffer = io.BytesIO()
        synthetic_dog("samoyed", rng).save(buffer, format="PNG")
        ranked = client.post("/identify?top_k=3", files={"file": ("s.png", buffer.getvalue(), "image/png")}).json()[
            "breeds"
        ]
        hits += ranked[-1]["breed"] != "samoyed"
    assert hits >= 4
