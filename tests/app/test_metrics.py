"""GET /metrics: Prometheus text with request, work-queue and model metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_metrics_count_requests_show_the_queue_and_describe_the_model(client: TestClient) -> None:
    assert client.post("/mix", json={"breeds": {"beagle": 1}, "seed": 1}).status_code == 200
    text = client.get("/metrics").text
    assert 'handler="/mix"' in text and "http_request_duration_seconds" in text
    assert "vae_dogs_queued_work_seconds 0.0" in text and "vae_dogs_shed_requests_total" in text
    assert 'vae_dogs_model_info{breeds="3"' in text
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
