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
    # 1 by default: the event loop, the inference thread and torch's own pool otherwise fight over the cores
    # (measured in bench/load.py: 66.7 -> 95.1 /mix requests/s on 2 cores); more helps only large batches.
    torch_threads: int | None = Field(1, ge=1, description="torch CPU threads for inference (None: torch's choice)")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest accepted upload")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest accepted width*height (decompression bombs)")
    max_images: int = Field(64, ge=1, description="most images one request may generate (n, latents)")
    max_scale: int = Field(8, ge=1, description="largest nearest-neighbour upscale factor of image outputs")
    max_output_pixels: int = Field(
        64 * 512 * 512, ge=1, description="most pixels one request may generate (n * side^2)"
    )
    batch_window_ms: float = Field(2.0, ge=0, le=100, description="micro-batching wait for more requests; 0 = off")
    max_batch_size: int = Field(64, ge=1, le=4096, description="most images in one micro-batch")
    sampling_steps: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="DDIM steps of a diffusion prior (None: the checkpoint's); fewer is faster and coarser",
    )
    autoguidance: float | None = Field(
        None,
        ge=1,
        le=10,
        allow_inf_nan=False,
        description="autoguidance weight of a diffusion prior with a guide (None: the "
        "checkpoint's); 1 leaves the guide unused, which is faster",
    )
    inference_timeout_s: float = Field(30.0, gt=0, description="a request whose inference takes longer gets a 503")


@lru_cache
def get_settings() -> Settings:
    return Settings()
