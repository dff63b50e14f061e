"""The OpenAPI schema, completed at start-up with what only the settings and the checkpoint know: the maxima of
``n``, ``scale``, ``steps`` and the latents per request, the latent's length, and the breed names as an enum.

With the default settings, every request the schema allows is answered (tests/app/test_fuzz.py); one rule stays
unstated: the output-pixel limit (``VAE_DOGS_MAX_OUTPUT_PIXELS``, on n x side x scale squared), which the default
maxima of ``n`` and ``scale`` never reach at 64 px, and a lower setting answers with a clear 422."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.core.config import Settings
from app.schemas import DecodeRequest
from model.latent_ops import MAX_LATENT_ABS


def limits(settings: Settings) -> dict[str, int]:
    return {"n": settings.max_images, "steps": settings.max_images, "scale": settings.max_scale}


def _non_null(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [option for option in schema.get("anyOf", [schema]) if option.get("type") != "null"]


def _complete(schema: dict[str, Any], maxima: dict[str, int], breeds: list[str], latent_dim: int) -> None:
    latent = {
        "type": "array",
        "items": {"type": "number", "minimum": -MAX_LATENT_ABS, "maximum": MAX_LATENT_ABS},
        "minItems": latent_dim,
        "maxItems": latent_dim,
    }
    for path in schema["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                name, target = parameter["name"], _non_null(parameter["schema"])[0]
                if name in maxima:
                    target["maximum"] = maxima[name]
                elif name == "breed":
                    target["enum"] = breeds
    for model in schema.get("components", {}).get("schemas", {}).values():
        for name, field in model.get("properties", {}).items():
            if name in maxima and field.get("type") == "integer":
                field["maximum"] = maxima[name]
            elif name == "latents":
                field.update(maxItems=maxima["n"], items=latent)
            elif name == "latent":
                field["anyOf"] = [latent if option.get("type") == "array" else option for option in field["anyOf"]]
            elif name == "breeds":
                for option in _non_null(field):
                    if option.get("type") == "object":
                        option.update(propertyNames={"type": "string", "enum": breeds}, minProperties=1)
                        option["additionalProperties"] = {"type": "number", "minimum": 0}
                        # not all weights zero
                        option["not"] = {"additionalProperties": {"maximum": 0}}


def with_own_bodies(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema and the request bodies that routes parse themselves: POST /decode's (off the event loop)."""
    schema = FastAPI.openapi(app)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("DecodeRequest", DecodeRequest.model_json_schema(ref_template="#/components/schemas/{model}"))
    return schema


def describe_bodies(app: FastAPI) -> None:
    """Make ``app.openapi()`` name the bodies that routes parse themselves, before any model is loaded."""
    app.openapi = lambda: with_own_bodies(app)  # type: ignore[method-assign]


def document_model(app: FastAPI, settings: Settings, breeds: list[str], latent_dim: int) -> None:
    """Make ``app.openapi()`` carry the settings' limits and the loaded checkpoint's breeds and latent size."""
    maxima = limits(settings)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = with_own_bodies(app)
            _complete(schema, maxima, breeds, latent_dim)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi_schema = None
    app.openapi = openapi  # type: ignore[method-assign]
