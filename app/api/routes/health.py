from __future__ import annotations

from fastapi import APIRouter

from app.deps import ModelDep, SettingsDep
from app.schemas import BreedInfo, Health, Info

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Health, summary="Readiness: the model is loaded",
            responses={503: {"description": "the model is not loaded"}})
def ready(service: ModelDep) -> Health:
    return Health(status="ready")


@router.get("/info", response_model=Info, summary="The model card: breeds, resolution, metrics, checksum, device")
def info(service: ModelDep, settings: SettingsDep) -> Info:
    card, cfg = service.card, service.model.cfg
    diffusion = cfg.latent_prior == "diffusion"
    return Info(
        breeds=[BreedInfo(**b) for b in card["breeds"]],
        resolution=service.image_size,
        latent_dim=cfg.latent_dim,
        latent_prior=cfg.latent_prior,
        sampling_steps=cfg.diffusion_sampling_steps if diffusion else None,
        guidance=cfg.diffusion_guidance if diffusion else None,
        guidance_max_t=cfg.diffusion_guidance_max_t if diffusion else None,
        guidance_rescale=cfg.diffusion_guidance_rescale if diffusion else None,
        output_scale=cfg.diffusion_output_scale if diffusion else None,
        eta=cfg.diffusion_eta if diffusion else None,
        autoguidance=cfg.diffusion_autoguidance if service.model.guide_prior is not None else None,
        discriminator_guidance=(cfg.diffusion_discriminator_guidance
                                if service.model.latent_discriminator is not None else None),
        device=str(service.device),
        checkpoint=str(settings.checkpoint),
        checkpoint_sha256=card["weights_sha256"],
        torch_version=card.get("torch_version"),
        git_commit=card.get("git_commit"),
        evaluation=card.get("evaluation"),
    )
