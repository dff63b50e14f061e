"""Prometheus metrics at ``GET /metrics``: per-endpoint request counts and latency, the work queue, model info."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Info
from prometheus_fastapi_instrumentator import Instrumentator

QUEUED_WORK = Gauge("vae_dogs_queued_work_seconds", "Estimated worker-seconds of admitted, unfinished work")
SHED = Counter("vae_dogs_shed_requests", "Requests refused with 503 + Retry-After because the queue was full")
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
