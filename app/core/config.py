"""Service settings, read from ``VAE_DOGS_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "dogs64"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAE_DOGS_", env_file=".env", extra="ignore")

    checkpoint: Path = Field(DEFAULT_CHECKPOINT, description="checkpoint folder (model.safetensors + card.json)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest accepted upload")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest accepted width*height (decompression bombs)")
    max_images: int = Field(64, ge=1, description="most images one request may generate (n, latents)")
    max_scale: int = Field(8, ge=1, description="largest nearest-neighbour upscale factor of image outputs")


@lru_cache
def get_settings() -> Settings:
    return Settings()
