from fastapi.testclient import TestClient


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}


def test_info_is_the_model_card(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["resolution"] == 64 and info["latent_dim"] == 32 and info["device"] == "cpu"
    assert info["latent_prior"] == "diffusion" and info["sampling_steps"] == 4  # the tiny checkpoint's own
    assert info["guidance"] == 2.0 and info["guidance_max_t"] == 1.0 and info["eta"] == 0.0
    assert info["autoguidance"] is None  # no autoguidance guide attached
    assert len(info["checkpoint_sha256"]) == 64
    assert [b["name"] for b in info["breeds"]] == ["beagle", "gordon_setter", "samoyed"]
    assert "identify_top1" in info["evaluation"]


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/mix", "/identify", "/sample", "/encode", "/decode", "/breeds", "/info"):
        assert path in paths


def test_sampling_steps_setting_overrides_the_checkpoints(tiny_diffusion_checkpoint) -> None:
    from app.core.config import Settings
    from app.core.inference import ModelService

    service = ModelService.load(Settings(checkpoint=tiny_diffusion_checkpoint, device="cpu", sampling_steps=2))
    try:
        assert service.model.cfg.diffusion_sampling_steps == 2
    finally:
        service.close()
