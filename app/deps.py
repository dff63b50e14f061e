"""Dependency aliases for the routes (the FastAPI full-stack template's ``deps.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from app.core.config import Settings, get_settings
from app.core.inference import ModelService


def get_model_service(request: Request) -> ModelService:
    service = getattr(request.app.state, "model_service", None)
    if service is None:
        raise HTTPException(status_code=503, detail="the model is not loaded yet")
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelDep = Annotated[ModelService, Depends(get_model_service)]
