"""POST /encode (photo -> latent) and POST /decode (latents -> PNG)."""

from __future__ import annotations

import torch
from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.responses import Response

from app.core.config import Settings
from app.core.inference import ModelService
from app.deps import ModelDep, SettingsDep
from app.images import decode_photo, png_response, read_upload
from app.schemas import IMAGE_PNG, BreedProbability, DecodeRequest, Encoding, Identification
from model import latent_ops

router = APIRouter(tags=["latent space"])


async def photo_tensor(file: UploadFile, service: ModelService, settings: Settings) -> torch.Tensor:
    data = await read_upload(file, settings.max_upload_bytes)
    return await service.run(decode_photo, data, settings.max_image_pixels, service.image_size)


def ranked(service: ModelService, probabilities: torch.Tensor, top_k: int | None = None) -> list[BreedProbability]:
    order = probabilities.argsort(descending=True)[:top_k]
    return [BreedProbability(breed=service.breeds[i], probability=float(probabilities[i])) for i in order.tolist()]


@router.post("/encode", response_model=Encoding, summary="Encode a dog photo to its latent posterior and breeds")
async def encode(
    service: ModelDep, settings: SettingsDep, file: UploadFile = File(description="a dog photo")
) -> Encoding:
    x = await photo_tensor(file, service, settings)
    enc = await service.run(latent_ops.encode, service.model, x)
    return Encoding(
        mean=enc.mean[0].tolist(), log_var=enc.log_var[0].tolist(), breeds=ranked(service, enc.breed_probabilities[0])
    )


@router.post("/decode", response_class=Response, responses=IMAGE_PNG, summary="Decode latent vectors to a PNG")
async def decode(body: DecodeRequest, service: ModelDep, settings: SettingsDep) -> Response:
    if len(body.latents) > settings.max_images:
        raise HTTPException(422, detail=f"at most {settings.max_images} latents per request, got {len(body.latents)}")
    if body.scale > settings.max_scale:
        raise HTTPException(422, detail=f"scale must be at most {settings.max_scale}")
    lengths = {len(row) for row in body.latents}
    if lengths != {service.model.vae.cfg.latent_dim}:
        raise HTTPException(
            422,
            detail=f"each latent must have {service.model.vae.cfg.latent_dim} numbers, got lengths {sorted(lengths)}",
        )
    weights = service.weights(body.breeds) if body.breeds else None
    images = await service.run(
        latent_ops.decode_latents, service.model, torch.tensor(body.latents, dtype=torch.float64), weights
    )  # float64: range-checked before float32
    return png_response(images, body.scale)


@router.post("/identify", response_model=Identification, summary="The closest breeds to a dog photo", tags=["breeds"])
async def identify(
    service: ModelDep,
    settings: SettingsDep,
    file: UploadFile = File(description="a dog photo"),
    top_k: int = Query(5, ge=1, le=1000, description="how many breeds to return, best first"),
) -> Identification:
    x = await photo_tensor(file, service, settings)
    probabilities = await service.classify(x)
    return Identification(breeds=ranked(service, probabilities[0], top_k))
