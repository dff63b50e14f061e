"""Prometheus metrics at ``GET /metrics``: per-endpoint request counts and latency, micro-batch sizes, model info."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from prometheus_client import Histogram, Info
from prometheus_fastapi_instrumentator import Instrumentator

BATCH_ROWS = Histogram(
    "vae_dogs_inference_batch_rows",
    "Images per model call after micro-batching",
    ["function"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
MODEL_INFO = Info("vae_dogs_model", "The loaded checkpoint")


def instrument(app: FastAPI) -> None:
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False)


def describe_model(card: dict[str, Any], device: str) -> None:
    config = card.get("config", {})
    MODEL_INFO.info(
        {
            "breeds": str(len(card.get("breeds", []))),
            "image_size": str(config.get("image_size", "")),
            "latent_dim": str(config.get("latent_dim", "")),
            "weights_sha256": str(card.get("weights_sha256", "")),
            "device": device,
        }
    )
