import pytest
from fastapi.testclient import TestClient


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}


def test_info_is_the_model_card(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["resolution"] == 64 and info["latent_dim"] == 32 and info["device"] == "cpu"
    assert info["latent_prior"] == "diffusion" and info["sampling_steps"] == 4  # the tiny checkpoint's own
    assert info["guidance"] == 2.0 and info["guidance_max_t"] == 1.0 and info["eta"] == 0.0
    assert info["guidance_rescale"] == 0.0 and info["output_scale"] == 1.0
    assert info["autoguidance"] is None  # no autoguidance guide attached
    assert info["discriminator_guidance"] is None  # no latent discriminator attached
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


def test_autoguidance_setting_overrides_the_checkpoints(tiny_diffusion_checkpoint, tmp_path) -> None:
    from app.core.config import Settings
    from app.core.inference import ModelService
    from model import checkpoint

    guided, card = checkpoint.load(tiny_diffusion_checkpoint)
    checkpoint.attach_guide(guided, tiny_diffusion_checkpoint)  # its own prior as the guide: enough to be attached
    guided.cfg.diffusion_autoguidance = 2.0
    checkpoint.save(guided, {k: v for k, v in card.items() if k not in ("config", "weights_sha256")}, tmp_path / "guided")
    service = ModelService.load(Settings(checkpoint=tmp_path / "guided", device="cpu", autoguidance=1))
    try:
        assert service.model.guide_prior is not None and service.model.cfg.diffusion_autoguidance == 1.0
    finally:
        service.close()


def test_autoguidance_setting_without_a_guide_is_refused(tiny_diffusion_checkpoint) -> None:
    from app.core.config import Settings
    from app.core.inference import ModelService

    with pytest.raises(RuntimeError, match="VAE_DOGS_AUTOGUIDANCE=2 needs a checkpoint with an autoguidance guide"):
        ModelService.load(Settings(checkpoint=tiny_diffusion_checkpoint, device="cpu", autoguidance=2))


def test_autoguidance_setting_must_be_finite_and_at_least_one() -> None:
    from pydantic import ValidationError

    from app.core.config import Settings

    for bad in (0.5, float("inf"), float("nan")):
        with pytest.raises(ValidationError):
            Settings(autoguidance=bad)


def test_a_checkpoint_with_discriminator_guidance_samples_in_the_service(tiny_diffusion_checkpoint, tmp_path) -> None:
    """The discriminator's gradient is taken on the service's inference thread, inside inference mode."""
    import asyncio
    from dataclasses import replace

    import torch

    from app.core.config import Settings
    from app.core.inference import ModelService
    from model import checkpoint, latent_ops
    from model.vae import BreedVAE

    source, card = checkpoint.load(tiny_diffusion_checkpoint)
    model = BreedVAE(replace(source.cfg, diffusion_discriminator_channels=8, diffusion_discriminator_blocks=1,
                             diffusion_discriminator_guidance=1.0))
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("latent_discriminator.") for k in missing)
    checkpoint.save(model, {k: v for k, v in card.items() if k not in ("config", "weights_sha256")}, tmp_path / "dg")
    service = ModelService.load(Settings(checkpoint=tmp_path / "dg", device="cpu"))
    try:
        weights = torch.tensor([0.5, 0.0, 0.5])
        mixed = asyncio.run(service.run(latent_ops.mix, service.model, weights, 2, seed=3))
        assert mixed.shape == (2, 3, 64, 64) and torch.isfinite(mixed).all()
        unguided = latent_ops.mix(source, weights, 2, seed=3)
        assert not torch.allclose(mixed, unguided)  # the discriminator moved the samples
    finally:
        service.close()
