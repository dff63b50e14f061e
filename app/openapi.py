"""The OpenAPI schema, completed at start-up with what only the settings and the checkpoint know: the maxima of
``n``, ``scale``, ``steps`` and the latents per request, and the breed names as an enum."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.core.config import Settings


def limits(settings: Settings) -> dict[str, int]:
    return {"n": settings.max_images, "steps": settings.max_images, "scale": settings.max_scale}


def _complete(schema: dict[str, Any], maxima: dict[str, int], breeds: list[str]) -> None:
    breed_names = {"type": "string", "enum": breeds}
    for path in schema["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                name, values = parameter["name"], parameter["schema"]
                target = next((s for s in values.get("anyOf", [values]) if s.get("type") != "null"), values)
                if name in maxima:
                    target["maximum"] = maxima[name]
                elif name == "breed":
                    target["enum"] = breeds
    models = schema.get("components", {}).get("schemas", {})
    for model in models.values():
        for name, field in model.get("properties", {}).items():
            if name in maxima and field.get("type") == "integer":
                field["maximum"] = maxima[name]
            elif name == "latents":
                field["maxItems"] = maxima["n"]
            elif name == "breeds" and ("additionalProperties" in field or "anyOf" in field):
                for option in field.get("anyOf", [field]):
                    if option.get("type") == "object":
                        option["propertyNames"] = breed_names


def document_model(app: FastAPI, settings: Settings, breeds: list[str]) -> None:
    """Make ``app.openapi()`` carry the settings' limits and the loaded checkpoint's breed names."""
    plain = FastAPI.openapi.__get__(app)
    maxima = limits(settings)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            _complete(schema, maxima, breeds)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi_schema = None
    app.openapi = openapi  # type: ignore[method-assign]
