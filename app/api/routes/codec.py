"""POST /encode (photo -> latent), POST /decode (latents -> PNG) and POST /identify (photo -> breeds)."""

from __future__ import annotations

import torch
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from app.core.config import Settings
from app.core.inference import ModelService
from app.deps import ModelDep, PhotoDep, SettingsDep
from app.images import decode_photo, png_image, png_response
from app.schemas import (
    IMAGE_PNG,
    JSON_ERRORS,
    PHOTO_ERRORS,
    BreedProbability,
    DecodeRequest,
    Encoding,
    Identification,
)
from model import latent_ops

router = APIRouter()  # tags per route: /identify is listed with the breeds, once


def photo_tensor(data: bytes, service: ModelService, settings: Settings) -> torch.Tensor:
    """Decode an upload to the model's input (call it on a worker: decoding a photo is CPU work)."""
    return decode_photo(data, settings.max_image_pixels, service.model.photo_size)


def ranked(service: ModelService, probabilities: torch.Tensor, top_k: int | None = None) -> list[BreedProbability]:
    order = probabilities.argsort(descending=True)[:top_k]
    return [BreedProbability(breed=service.breeds[i], probability=float(probabilities[i])) for i in order.tolist()]


@router.post(
    "/encode",
    response_model=Encoding,
    responses=PHOTO_ERRORS,
    summary="Encode a dog photo to its latent posterior and breeds",
    tags=["latent space"],
)
async def encode(photo: PhotoDep, service: ModelDep, settings: SettingsDep, request: Request) -> Encoding:
    enc = await service.run(
        lambda: latent_ops.encode(service.model, photo_tensor(photo, service, settings)), "photo", 1, request
    )
    return Encoding(
        mean=enc.mean[0].tolist(), log_var=enc.log_var[0].tolist(), breeds=ranked(service, enc.breed_probabilities[0])
    )


async def decode_request(request: Request) -> DecodeRequest:
    """The body of POST /decode, parsed and checked on a worker thread: it may hold 64 latents of a thousand numbers
    each (megabytes of JSON), which the event loop, answering /health meanwhile, should not parse."""
    raw = await request.body()
    try:
        return await run_in_threadpool(DecodeRequest.model_validate_json, raw)
    except ValidationError as err:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in err.errors()]) from None


@router.post(
    "/decode",
    response_class=Response,
    responses=IMAGE_PNG | JSON_ERRORS,
    summary="Decode latent vectors to a PNG",
    tags=["latent space"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DecodeRequest"}}},
        }
    },
)
async def decode(
    service: ModelDep, settings: SettingsDep, request: Request, body: DecodeRequest = Depends(decode_request)
) -> Response:
    if len(body.latents) > settings.max_images:
        raise HTTPException(422, detail=f"at most {settings.max_images} latents per request, got {len(body.latents)}")
    if body.scale > settings.max_scale:
        raise HTTPException(422, detail=f"scale must be at most {settings.max_scale}, got {body.scale}")
    lengths = {len(row) for row in body.latents}
    if lengths != {service.model.vae.cfg.latent_dim}:
        raise HTTPException(
            422,
            detail=f"each latent must have {service.model.vae.cfg.latent_dim} numbers, got lengths {sorted(lengths)}",
        )
    weights = service.weights(body.breeds) if body.breeds else None

    def work() -> bytes:
        z = torch.tensor(body.latents, dtype=torch.float64)  # float64: range-checked before float32
        return png_image(latent_ops.decode_latents(service.model, z, weights), body.scale)

    return png_response(await service.run(work, "decode", len(body.latents), request))


@router.post(
    "/identify",
    response_model=Identification,
    responses=PHOTO_ERRORS,
    summary="The closest breeds to a dog photo",
    tags=["breeds"],
)
async def identify(
    photo: PhotoDep,
    service: ModelDep,
    settings: SettingsDep,
    request: Request,
    top_k: int = Query(5, ge=1, le=1000, description="how many breeds to return, best first"),
) -> Identification:
    found = await service.run(
        lambda: latent_ops.identify(service.model, photo_tensor(photo, service, settings), top_k)[0],
        "photo",
        1,
        request,
    )
    return Identification(
        breeds=[BreedProbability(breed=service.breeds[i], probability=p) for i, p in found.breeds],
        **dog_check(found.dog_probability, found.looks_like_a_dog),
    )


def dog_check(dog_probability: float, looks_like_a_dog: bool) -> dict[str, object]:
    """The "is it a dog at all?" fields of a photo's answer."""
    note = None
    if not looks_like_a_dog:
        note = (
            f"this photo does not look like a dog (dog probability {dog_probability:.2f}): the breeds are the nearest "
            "of the known ones, not an identification; send a photo with a dog in it"
        )
    return {"dog_probability": dog_probability, "looks_like_a_dog": looks_like_a_dog, "note": note}
