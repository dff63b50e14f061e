"""Dependency aliases for the routes (the FastAPI full-stack template's ``deps.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, HTTPException, Request, UploadFile

from app.core.config import Settings, get_settings
from app.core.inference import ModelService
from app.images import read_upload


def get_model_service(request: Request) -> ModelService:
    service = getattr(request.app.state, "model_service", None)
    if service is None:
        raise HTTPException(status_code=503, detail="the model is not loaded yet", headers={"Retry-After": "5"})
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelDep = Annotated[ModelService, Depends(get_model_service)]


async def get_photo(
    request: Request, settings: SettingsDep, file: UploadFile = File(description="a dog photo (JPEG, PNG or WebP)")
) -> bytes:
    """The bytes of the one uploaded ``file`` (decoded later, on a worker)."""
    parts = (await request.form()).getlist("file")  # parsed once; FastAPI itself keeps only the last part
    if len(parts) != 1:
        raise HTTPException(422, detail=f"send exactly one 'file' part, got {len(parts)}")
    return await read_upload(file, settings.max_upload_bytes)


PhotoDep = Annotated[bytes, Depends(get_photo)]
