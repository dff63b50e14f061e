import pytest
import torch
from fastapi.testclient import TestClient


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}


def test_info_is_the_model_card(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["resolution"] == 64 and info["latent_dim"] == 32 and info["device"] == "cpu"
    assert info["latent_prior"] == "diffusion" and info["sampling_steps"] == 4  # the tiny checkpoint's own
    assert info["guidance"] == 2.0 and info["eta"] == 0.0
    assert info["guidance_rescale"] == 0.0 and info["output_scale"] == 1.0 and info["mix_strength"] == 0.0
    assert info["autoguidance"] is None  # no autoguidance guide attached
    assert "guidance_max_t" not in info and "discriminator_guidance" not in info  # removed knobs
    assert len(info["checkpoint_sha256"]) == 64
    assert [b["name"] for b in info["breeds"]] == ["beagle", "gordon_setter", "samoyed"]
    assert "identify_top1" in info["evaluation"]
    assert info["identifier"]["image_size"] == 64 and info["identifier"]["temperature"] > 0


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/mix", "/identify", "/sample", "/encode", "/decode", "/breeds", "/info"):
        assert path in paths
    # Each operation is listed once on the docs page: under exactly one tag.
    assert {path: [len(op["tags"]) for op in ops.values()] for path, ops in paths.items()} == {
        path: [1] * len(ops) for path, ops in paths.items()
    }


def test_info_shows_no_path_of_the_machine(client: TestClient, identifier_checkpoint) -> None:
    info = client.get("/info").json()
    assert info["checkpoint"] == identifier_checkpoint.name
    assert "/" not in client.get("/info").text.replace("/breeds", "")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_need_no_network(client: TestClient, page: str) -> None:
    """Swagger UI and ReDoc come from this service (fastapi-offline), not from a CDN."""
    import re

    html = client.get(page).text
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(url.startswith("/") for url in sources), sources
    assert "fonts.googleapis" not in html
    for url in sources:
        assert client.get(url).status_code == 200, url


def test_every_answer_has_security_headers(client: TestClient) -> None:
    for path in ("/", "/health", "/docs", "/sample?n=1"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
    page = client.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in page and "unsafe-inline" not in page and "object-src 'none'" in page


def test_head_on_get_routes(client: TestClient) -> None:
    for path in ("/health", "/breeds", "/", "/sample?n=1&seed=1"):
        head, get = client.head(path), client.get(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"]
    assert client.head("/mix").status_code == 405  # a POST route stays POST


def test_the_schema_states_the_limits(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    sample = {p["name"]: p["schema"] for p in spec["paths"]["/sample"]["get"]["parameters"]}
    assert sample["n"]["maximum"] == 64 and sample["scale"]["maximum"] == 8
    assert sample["breed"]["anyOf"][0]["enum"] == ["beagle", "gordon_setter", "samoyed"]
    seed_max = sample["seed"]["anyOf"][0]["maximum"]
    assert isinstance(seed_max, int) and seed_max == 2**53 - 1  # exact in any JSON reader
    identify = {p["name"]: p["schema"] for p in spec["paths"]["/identify"]["post"]["parameters"]}
    assert identify["top_k"]["maximum"] == 1000  # more than the breeds is allowed: all of them come back
    mix = spec["components"]["schemas"]["MixRequest"]["properties"]
    assert mix["n"]["maximum"] == 64 and mix["breeds"]["propertyNames"]["enum"][0] == "beagle"
    assert spec["components"]["schemas"]["MorphRequest"]["properties"]["steps"]["maximum"] == 64
    assert spec["components"]["schemas"]["DecodeRequest"]["properties"]["latents"]["maxItems"] == 64


def test_error_codes_are_listed_per_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/sample"]["get"]["responses"]) == {"200", "422", "503"}  # no upload, so no 400/413/415
    assert set(paths["/identify"]["post"]["responses"]) == {"200", "400", "413", "415", "422", "503"}
    assert set(paths["/health"]["get"]["responses"]) == {"200"}


def test_sampling_steps_setting_overrides_the_checkpoints(tiny_diffusion_checkpoint) -> None:
    from app.core.config import Settings
    from app.core.inference import ModelService

    service = ModelService.load(Settings(checkpoint=tiny_diffusion_checkpoint, device="cpu", sampling_steps=2))
    try:
        assert service.sampling.steps == 2 and service.model.sampling.steps == 4  # the model is left as it is
    finally:
        service.close()


def test_autoguidance_setting_overrides_the_checkpoints(tiny_diffusion_checkpoint, tmp_path) -> None:
    from dataclasses import replace

    from app.core.config import Settings
    from app.core.inference import ModelService
    from model import checkpoint

    source, card = checkpoint.load(tiny_diffusion_checkpoint)
    guided = checkpoint.attach_guide(source, tiny_diffusion_checkpoint)  # its own prior as the guide: enough to attach
    guided.sampling = replace(guided.sampling, autoguidance=2.0)
    checkpoint.save(guided, {k: v for k, v in card.items() if k != "weights_sha256"}, tmp_path / "guided")
    service = ModelService.load(Settings(checkpoint=tmp_path / "guided", device="cpu", autoguidance=1))
    try:
        assert service.model.prior.guide is not None and service.model.sampling.autoguidance == 2.0
        assert service.sampling.autoguidance == 1.0
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


def test_a_distilled_checkpoint_serves_its_student_unless_told_otherwise(distilled_checkpoint) -> None:
    from app.api.routes.health import info
    from app.core.config import Settings
    from app.core.inference import ModelService
    from model import latent_ops

    for override, expected in ((None, True), (False, False)):
        settings = Settings(checkpoint=distilled_checkpoint, device="cpu", distilled=override)
        service = ModelService.load(settings)
        try:
            assert service.sampling.distilled is expected and info(service, settings).distilled is expected
            served = latent_ops.sample(service.model, 2, breed=0, seed=1, sampling=service.sampling)
            student = latent_ops.sample(service.model, 2, breed=0, seed=1)  # the checkpoint's own: the student
            assert torch.equal(served, student) is expected
        finally:
            service.close()


def test_distilled_setting_without_a_student_is_refused(client: TestClient, tiny_diffusion_checkpoint) -> None:
    from app.core.config import Settings
    from app.core.inference import ModelService

    assert client.get("/info").json()["distilled"] is None  # the tiny checkpoint has no student
    with pytest.raises(RuntimeError, match="VAE_DOGS_DISTILLED=true needs a checkpoint with a distilled student"):
        ModelService.load(Settings(checkpoint=tiny_diffusion_checkpoint, device="cpu", distilled=True))
