"""The examples on /docs run against the committed default checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import DEFAULT_CHECKPOINT, Settings, get_settings
from app.main import create_app


@pytest.fixture(scope="module")
def default_client() -> TestClient:
    if not (Path(DEFAULT_CHECKPOINT) / "card.json").is_file():
        pytest.fail(f"the default checkpoint {DEFAULT_CHECKPOINT} is missing")
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: Settings(checkpoint=DEFAULT_CHECKPOINT, device="cpu")
    with TestClient(app) as client:
        yield client


def test_every_json_body_example_runs(default_client: TestClient) -> None:
    spec = default_client.get("/openapi.json").json()
    ran = 0
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if not content:
                continue
            schema = content["schema"]
            if "$ref" in schema:
                schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
            for example in schema.get("examples", []):
                response = default_client.request(method.upper(), path, json=example)
                assert response.status_code == 200, (path, example, response.text)
                ran += 1
    assert ran >= 2  # /mix and /decode


def test_default_checkpoint_serves_all_breeds(default_client: TestClient) -> None:
    info = default_client.get("/info").json()
    assert info["resolution"] == 64 and len(info["breeds"]) == 120
    response = default_client.get("/sample?n=4&seed=0&breed=miniature_pinscher")
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
