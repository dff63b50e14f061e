"""Schemathesis against the app's own /openapi.json: no 5xx, no response that breaks the schema, no invalid
input accepted.

A bounded number of generated requests per operation (``FUZZ_EXAMPLES``, default 12), so it runs in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from app.core.config import Settings, get_settings
from app.main import create_app

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
fuzz_app = create_app()  # the schema is read from this app now; its model is loaded by the fixture below
schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


@pytest.fixture(scope="module", autouse=True)
def loaded_model(tiny_checkpoint: Path) -> Iterator[None]:
    fuzz_app.dependency_overrides[get_settings] = lambda: Settings(
        checkpoint=tiny_checkpoint, device="cpu", max_upload_bytes=200_000
    )
    with TestClient(fuzz_app):  # runs the lifespan: loads the tiny checkpoint
        yield


@pytest.fixture(scope="module")
def served_schema(tiny_checkpoint: Path) -> Iterator[schemathesis.BaseSchema]:
    """The schema as served once the checkpoint is loaded: with its breed names, latent size and the limits."""
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: Settings(checkpoint=tiny_checkpoint, device="cpu")
    with TestClient(app) as client:
        served = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        served.app, served.location = app, "/openapi.json"
        yield served


# Schemathesis' lazy loading from a fixture does not run on pytest 9, so the served schema's operations are driven
# here with hypothesis directly.
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize(
    "path, method", [("/sample", "GET"), ("/mix", "POST"), ("/decode", "POST"), ("/morph", "POST")]
)
def test_requests_the_served_schema_allows_are_answered(served_schema, path: str, method: str) -> None:  # type: ignore[no-untyped-def]
    """Every check, schema-valid data accepted included: the served schema names the breeds, the limits, the
    latent's length and bounds, that weights are not all zero, and that a morph's end is
    either breeds or a latent, so every query or JSON body it allows is answered with a 200. (The uploads must
    also decode as photos, which no schema says.)"""
    from hypothesis import given

    @given(case=served_schema[path][method].as_strategy())
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate()

    check()


# A NaN reaching a PNG is only a RuntimeWarning in numpy's cast; here it fails the test (it did once: 1e300 latents).
@pytest.mark.filterwarnings("error::RuntimeWarning")
@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case) -> None:  # type: ignore[no-untyped-def]
    # Every check but "schema-valid data is accepted": this schema is read before the model is loaded (so without
    # its breed names), and no schema says which bytes decode as a photo, so a 4xx for those is the right answer.
    excluded = [positive_data_acceptance]
    response = case.call()
    if response.status_code == 413:  # a body over the JSON size limit is refused before it is read, valid or not
        excluded.append(negative_data_rejection)
    case.validate_response(response, excluded_checks=excluded)
