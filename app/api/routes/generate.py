"""POST /mix (new breeds from weighted old ones) and GET /sample (dogs from the prior)."""

from __future__ import annotations

import hashlib
import secrets

import torch
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from app.core.inference import ModelService
from app.deps import ModelDep, SettingsDep
from app.images import gif_image, gif_response, png_image, png_response
from app.schemas import IMAGE_PNG, JSON_ERRORS, MAX_SEED, QUERY_ERRORS, MixRequest, MorphEnd, MorphRequest
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


CACHE_SECONDS = 3600  # a redeployed checkpoint draws other dogs for the same seed: revalidate by ETag after this


def generated_headers(seed: int, asked: int | None, data: bytes) -> dict[str, str]:
    """``X-Seed``, and for a request that named its seed (same seed, same bytes on this checkpoint) a
    ``Cache-Control`` and a strong ``ETag`` of the bytes, so a browser or proxy can keep the answer; a random draw
    is never stored."""
    if asked is None:
        return {"X-Seed": str(seed), "Cache-Control": "no-store"}
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    return {"X-Seed": str(seed), "Cache-Control": f"public, max-age={CACHE_SECONDS}", "ETag": etag}


@router.post(
    "/mix",
    response_class=Response,
    responses=IMAGE_PNG | JSON_ERRORS,
    summary="Blend breeds with weights into a new breed; the X-Seed header reproduces the result",
)
async def mix(body: MixRequest, service: ModelDep, settings: SettingsDep, request: Request) -> Response:
    check_limits(settings, body.n, body.scale, service.image_size)
    weights = service.weights(body.breeds)
    seed = seed_or_random(body.seed)

    def work() -> bytes:
        images = latent_ops.mix(service.model, weights, body.n, seed, body.temperature, service.sampling)
        return png_image(images, body.scale)

    data = await service.run(work, "mix", body.n, request)
    return png_response(data, headers=generated_headers(seed, body.seed, data))


@router.get(
    "/sample",
    response_class=Response,
    responses=IMAGE_PNG | QUERY_ERRORS,
    summary="Random dogs from the prior, optionally of one breed",
)
async def sample(
    service: ModelDep,
    settings: SettingsDep,
    request: Request,
    n: int = Query(16, ge=1, description="how many dogs (a grid)"),
    seed: int | None = Query(None, ge=0, le=MAX_SEED),
    temperature: float = Query(1.0, ge=0, le=3),
    breed: str | None = Query(None, description="a breed name from GET /breeds; default: random breeds"),
    scale: int = Query(1, ge=1),
) -> Response:
    check_limits(settings, n, scale, service.image_size)
    breed_index = service.breed_index(breed) if breed is not None else None  # "" is no breed: a 422
    drawn = seed_or_random(seed)

    def work() -> bytes:
        images = latent_ops.sample(service.model, n, breed_index, drawn, temperature, service.sampling)
        return png_image(images, scale)

    data = await service.run(work, "sample", n, request)
    headers = generated_headers(drawn, seed, data)
    if seed is not None and request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)  # the browser's copy is these bytes: none sent again
    return png_response(data, headers=headers)


def morph_end(
    service: ModelService, end: MorphEnd, weights: torch.Tensor | None, seed: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if end.latent is not None:
        return latent_ops.latent_endpoint(service.model, latent=torch.tensor(end.latent, dtype=torch.float64))
    return latent_ops.latent_endpoint(
        service.model, weights, seed=seed, temperature=temperature, sampling=service.sampling
    )


@router.post(
    "/morph",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/gif": {}}, "description": "a strip (PNG) or an animation (GIF)"}
    }
    | JSON_ERRORS,
    summary="A morph from one breed mix (or latent) to another: a PNG strip or an animated GIF",
)
async def morph(body: MorphRequest, service: ModelDep, settings: SettingsDep, request: Request) -> Response:
    check_limits(settings, body.steps, body.scale, service.image_size)
    seed = seed_or_random(body.seed)
    # Breed names are checked here, on the event loop, so an unknown one is a 422 before any work.
    ends = [service.weights(e.breeds) if e.breeds is not None else None for e in (body.start, body.end)]

    def work() -> bytes:
        start, end = (
            morph_end(service, e, w, seed, body.temperature) for e, w in zip((body.start, body.end), ends, strict=True)
        )
        frames = latent_ops.morph(service.model, start, end, body.steps)
        if body.format == "gif":
            return gif_image(frames, body.scale)
        return png_image(frames, body.scale, columns=body.steps)

    data = await service.run(work, "morph", body.steps, request)
    headers = generated_headers(seed, body.seed, data)
    return gif_response(data, headers) if body.format == "gif" else png_response(data, headers)
