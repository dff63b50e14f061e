"""POST /mix and GET /sample."""

import pytest
from fastapi.testclient import TestClient

from tests.app.conftest import image_bytes, png_size


def test_mix_returns_a_png_grid_and_its_seed(client: TestClient) -> None:
    response = client.post("/mix", json={"breeds": {"beagle": 0.5, "samoyed": 0.5}, "seed": 7, "n": 4})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-seed"] == "7"
    assert png_size(response.content) == (2 + 2 * 66, 2 + 2 * 66)


def test_mix_is_reproducible_and_depends_on_the_weights(client: TestClient) -> None:
    body = {"breeds": {"beagle": 0.7, "gordon_setter": 0.3}, "seed": 3}
    first, again = client.post("/mix", json=body), client.post("/mix", json=body)
    assert first.content == again.content
    other = client.post("/mix", json={**body, "breeds": {"samoyed": 1}})
    assert other.content != first.content


def test_mix_weights_are_normalised(client: TestClient) -> None:
    a = client.post("/mix", json={"breeds": {"beagle": 1, "samoyed": 1}, "seed": 1})
    b = client.post("/mix", json={"breeds": {"beagle": 5, "samoyed": 5}, "seed": 1})
    assert a.content == b.content


def test_mix_without_seed_reports_the_one_it_used(client: TestClient) -> None:
    response = client.post("/mix", json={"breeds": {"Gordon Setter": 1}})
    seed = int(response.headers["x-seed"])
    again = client.post("/mix", json={"breeds": {"gordon_setter": 1}, "seed": seed})
    assert again.content == response.content


@pytest.mark.parametrize(
    "breeds, message",
    [
        ({"beagel": 1}, "did you mean beagle"),
        ({"unicorn": 1}, "GET /breeds"),
        ({"beagle": -0.5}, "negative"),
        ({"beagle": 0, "samoyed": 0}, "all zero"),
        ({}, "at least one breed"),
    ],
)
def test_mix_rejects_bad_breeds_and_weights(client: TestClient, breeds: dict, message: str) -> None:
    response = client.post("/mix", json={"breeds": breeds})
    assert response.status_code == 422 and message in response.text


@pytest.mark.parametrize("raw", [b'{"breeds": {"beagle": NaN}}', b'{"breeds": {"beagle": Infinity}}'])
def test_mix_rejects_non_finite_weights(client: TestClient, raw: bytes) -> None:
    response = client.post("/mix", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "finite" in response.text


def test_huge_finite_weights_are_weights_not_infinities(client: TestClient) -> None:
    """1e300 is a finite number: it mixes like 1 (it used to overflow float32 and be called 'not finite')."""
    huge = client.post("/mix", json={"breeds": {"beagle": 1e300, "samoyed": 1e300}, "seed": 3})
    even = client.post("/mix", json={"breeds": {"beagle": 1, "samoyed": 1}, "seed": 3})
    assert huge.status_code == 200, huge.text
    assert huge.content == even.content


def test_an_unknown_breed_is_not_echoed_in_full(client: TestClient) -> None:
    response = client.post("/mix", json={"breeds": {"x" * 50_000: 1}})  # near the 64 KiB cap of a /mix body
    assert response.status_code == 422
    assert len(response.content) < 500 and "50,000 characters" in response.json()["detail"]


def test_mix_rejects_absurd_n_and_scale(client: TestClient) -> None:
    assert client.post("/mix", json={"breeds": {"beagle": 1}, "n": 1000}).status_code == 422
    assert client.post("/mix", json={"breeds": {"beagle": 1}, "n": 0}).status_code == 422
    assert client.post("/mix", json={"breeds": {"beagle": 1}, "scale": 50}).status_code == 422


def test_total_output_pixels_are_capped(client: TestClient) -> None:
    from app.core.config import get_settings

    settings = get_settings()
    limit = settings.max_output_pixels
    settings.max_output_pixels = 10 * 64 * 64
    try:
        assert client.get("/sample?n=10").status_code == 200  # exactly at the limit
        response = client.get("/sample?n=11")
        assert response.status_code == 422 and "pixel limit per request" in response.json()["detail"]
    finally:
        settings.max_output_pixels = limit


def test_sample_grid_of_one_breed(client: TestClient) -> None:
    response = client.get("/sample?n=9&seed=1&breed=samoyed&scale=2")
    assert response.status_code == 200
    assert png_size(response.content) == (2 * (2 + 3 * 66), 2 * (2 + 3 * 66))
    assert client.get("/sample?n=9&seed=1&breed=samoyed&scale=2").content == response.content


def test_sample_temperature_zero_gives_the_breed_mean(client: TestClient) -> None:
    a = client.get("/sample?n=1&seed=1&breed=beagle&temperature=0").content
    b = client.get("/sample?n=1&seed=2&breed=beagle&temperature=0").content
    assert a == b


@pytest.mark.parametrize(
    "query, status",
    [
        ("n=65", 422),
        ("n=-1", 422),
        ("temperature=-1", 422),
        ("temperature=nan", 422),
        ("breed=unicorn", 422),
        ("seed=-3", 422),
    ],
)
def test_sample_rejects_bad_queries(client: TestClient, query: str, status: int) -> None:
    assert client.get(f"/sample?{query}").status_code == status


def test_answers_to_a_named_seed_are_cacheable_and_random_ones_are_not(client: TestClient) -> None:
    first = client.get("/sample", params={"n": 1, "seed": 3, "breed": "beagle"})
    again = client.get("/sample", params={"n": 1, "seed": 3, "breed": "beagle"})
    assert first.headers["cache-control"].startswith("public, max-age=") and first.headers["etag"].startswith('"')
    assert again.headers["etag"] == first.headers["etag"] and again.content == first.content
    unchanged = client.get(
        "/sample", params={"n": 1, "seed": 3, "breed": "beagle"}, headers={"If-None-Match": first.headers["etag"]}
    )
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert client.get("/sample", params={"n": 1, "seed": 4}).headers["etag"] != first.headers["etag"]
    random = client.get("/sample", params={"n": 1})
    assert random.headers["cache-control"] == "no-store" and "etag" not in random.headers
    mixed = client.post("/mix", json={"breeds": {"beagle": 0.5, "samoyed": 0.5}, "seed": 1, "n": 1})
    assert mixed.headers["cache-control"].startswith("public") and "etag" in mixed.headers


def test_json_bodies_are_capped_by_what_their_endpoint_needs_and_unknown_fields_refused(client: TestClient) -> None:
    padded = b'{"breeds": {"beagle": 1}, "seed": 1' + b" " * 100_000 + b"}"
    refused = client.post("/mix", content=padded, headers={"Content-Type": "application/json"})
    assert refused.status_code == 413 and "65,536-byte limit" in refused.json()["detail"]
    no_type = client.post("/mix", content=padded)  # parsed as JSON all the same: capped all the same
    assert no_type.status_code == 413
    latent = client.post("/encode", files={"file": ("dog.png", image_bytes(), "image/png")}).json()["mean"]
    big_decode = b'{"latents": [' + ",".join([str(latent)] * 2).encode() + b"]" + b" " * 100_000 + b"}"
    assert client.post("/decode", content=big_decode, headers={"Content-Type": "application/json"}).status_code == 200
    misspelt = client.post("/mix", json={"breeds": {"beagle": 1}, "sead": 3})
    assert misspelt.status_code == 422 and "sead" in misspelt.text
    stray = client.post(
        "/morph", json={"start": {"breeds": {"beagle": 1}, "colour": 1}, "end": {"breeds": {"samoyed": 1}}}
    )
    assert stray.status_code == 422 and "colour" in stray.text


def test_the_schema_and_the_checks_agree_on_integers_and_breed_names(client: TestClient) -> None:
    whole = client.post("/mix", json={"breeds": {"beagle": 1}, "seed": 2.0, "n": 1.0, "scale": 2.0})
    assert whole.status_code == 200 and whole.headers["x-seed"] == "2"  # JSON Schema's integers include 2.0
    for bad in ({"n": 1.5}, {"n": "1"}, {"n": True}):
        assert client.post("/mix", json={"breeds": {"beagle": 1}} | bad).status_code == 422
    empty = client.get("/sample", params={"breed": "", "n": 1})
    assert empty.status_code == 422 and "unknown breed" in empty.json()["detail"]
