from __future__ import annotations

from fastapi import APIRouter

from app.deps import ModelDep, SettingsDep
from app.schemas import NOT_LOADED, BreedInfo, Health, Info

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Health,
    summary="Readiness: the model is loaded",
    responses=NOT_LOADED,
)
def ready(service: ModelDep) -> Health:
    return Health(status="ready")


@router.get(
    "/info",
    response_model=Info,
    responses=NOT_LOADED,
    summary="The model card: breeds, resolution, metrics, checksum, device",
)
def info(service: ModelDep, settings: SettingsDep) -> Info:
    card, cfg, prior, sampling = service.card, service.model.vae.cfg, service.model.prior, service.sampling
    diffusion = prior.kind == "diffusion"
    return Info(
        breeds=[BreedInfo(**b) for b in card["breeds"]],
        resolution=service.image_size,
        latent_dim=cfg.latent_dim,
        latent_prior=prior.kind,
        sampling_steps=sampling.steps if diffusion else None,
        guidance=sampling.guidance if diffusion else None,
        guidance_rescale=sampling.guidance_rescale if diffusion else None,
        output_scale=sampling.output_scale if diffusion else None,
        eta=sampling.eta if diffusion else None,
        autoguidance=sampling.autoguidance if service.model.has_guide else None,
        mix_strength=sampling.mix_strength if diffusion else None,
        distilled=sampling.distilled if service.model.has_student else None,
        identifier=card.get("identifier"),
        device=str(service.device),
        checkpoint=settings.checkpoint.name,
        checkpoint_sha256=card["weights_sha256"],
        torch_version=card.get("torch_version"),
        git_commit=card.get("git_commit"),
        evaluation=card.get("evaluation"),
    )
