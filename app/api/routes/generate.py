"""POST /mix (new breeds from weighted old ones) and GET /sample (dogs from the prior)."""

from __future__ import annotations

import secrets

import torch
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from app.core.inference import ModelService
from app.deps import ModelDep, SettingsDep
from app.images import gif_response, png_response
from app.schemas import IMAGE_PNG, MixRequest, MorphEnd, MorphRequest
from model import latent_ops

router = APIRouter(tags=["generate"])


def check_limits(settings: SettingsDep, n: int, scale: int, side: int) -> None:
    """Refuse, before any work, requests for more images, upscaling or output pixels than the settings allow."""
    if n > settings.max_images:
        raise HTTPException(422, detail=f"at most {settings.max_images} images per request, got {n}")
    if scale > settings.max_scale:
        raise HTTPException(422, detail=f"scale must be at most {settings.max_scale}, got {scale}")
    pixels = n * (side * scale) ** 2
    if pixels > settings.max_output_pixels:
        raise HTTPException(
            422,
            detail=f"{n} images of {side * scale}x{side * scale} are {pixels:,} pixels, more than the "
            f"{settings.max_output_pixels:,}-pixel limit per request; lower n or scale",
        )


def seed_or_random(seed: int | None) -> int:
    return seed if seed is not None else secrets.randbits(31)


@router.post(
    "/mix",
    response_class=Response,
    responses=IMAGE_PNG,
    summary="Blend breeds with weights into a new breed; the X-Seed header reproduces the result",
)
async def mix(body: MixRequest, service: ModelDep, settings: SettingsDep) -> Response:
    check_limits(settings, body.n, body.scale, service.image_size)
    weights = service.weights(body.breeds)
    seed = seed_or_random(body.seed)
    images = await service.decode(
        *latent_ops.mix_latents(service.model, weights, body.n, seed, body.temperature, service.sampling)
    )
    return png_response(images, body.scale, headers={"X-Seed": str(seed)})


@router.get(
    "/sample",
    response_class=Response,
    responses=IMAGE_PNG,
    summary="Random dogs from the prior, optionally of one breed",
)
async def sample(
    service: ModelDep,
    settings: SettingsDep,
    n: int = Query(16, ge=1, description="how many dogs (a grid)"),
    seed: int | None = Query(None, ge=0, le=2**63 - 1),
    temperature: float = Query(1.0, ge=0, le=3),
    breed: str | None = Query(None, description="a breed name from GET /breeds; default: random breeds"),
    scale: int = Query(1, ge=1),
) -> Response:
    check_limits(settings, n, scale, service.image_size)
    breed_index = service.breed_index(breed) if breed else None
    seed = seed_or_random(seed)
    images = await service.decode(
        *latent_ops.sample_latents(service.model, n, breed_index, seed, temperature, service.sampling)
    )
    return png_response(images, scale, headers={"X-Seed": str(seed)})


def morph_end(service: ModelService, end: MorphEnd, seed: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    if end.latent is not None:
        return latent_ops.latent_endpoint(service.model, latent=torch.tensor(end.latent, dtype=torch.float64))
    weights = service.weights(end.breeds)
    return latent_ops.latent_endpoint(
        service.model, weights, seed=seed, temperature=temperature, sampling=service.sampling
    )


@router.post(
    "/morph",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/gif": {}}, "description": "a strip (PNG) or an animation (GIF)"}
    },
    summary="A morph from one breed mix (or latent) to another: a PNG strip or an animated GIF",
)
async def morph(body: MorphRequest, service: ModelDep, settings: SettingsDep) -> Response:
    check_limits(settings, body.steps, body.scale, service.image_size)
    seed = seed_or_random(body.seed)

    def run() -> torch.Tensor:
        start = morph_end(service, body.start, seed, body.temperature)
        end = morph_end(service, body.end, seed, body.temperature)
        return latent_ops.morph(service.model, start, end, body.steps)

    frames = await service.run(run)
    headers = {"X-Seed": str(seed)}
    if body.format == "gif":
        return gif_response(frames, body.scale, headers)
    return png_response(frames, body.scale, headers, columns=body.steps)
