"""Service settings, read from ``VAE_DOGS_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "dogs120"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAE_DOGS_", env_file=".env", extra="ignore")

    checkpoint: Path = Field(DEFAULT_CHECKPOINT, description="checkpoint folder (model.safetensors + card.json)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    # 1 by default, with one worker per core: the workers, not torch's own pool, use the cores (more threads per
    # worker help only large batches).
    torch_threads: int | None = Field(1, ge=1, description="torch CPU threads for inference (None: torch's choice)")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest accepted upload")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest accepted width*height (decompression bombs)")
    max_images: int = Field(64, ge=1, description="most images one request may generate (n, latents)")
    max_scale: int = Field(8, ge=1, description="largest nearest-neighbour upscale factor of image outputs")
    max_output_pixels: int = Field(
        64 * 512 * 512, ge=1, description="most pixels one request may generate (n * side^2)"
    )
    workers: int | None = Field(
        None, ge=1, le=64, description="worker threads for model and image work (None: cores / torch_threads)"
    )
    max_queued_s: float = Field(
        10.0,
        gt=0,
        description="most estimated worker-seconds of admitted, unfinished work; beyond it requests get a 503 with "
        "Retry-After at once",
    )
    max_json_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1,
        description="largest JSON body of POST /decode (64 latents of 1,024 numbers as /encode writes them: 1.5 MB); "
        f"other JSON bodies at most {64 * 1024:,} bytes",
    )
    max_body_bytes: int = Field(
        11 * 1024 * 1024,
        ge=1,
        description="largest request body, counted while it streams in (an upload and its multipart framing, "
        "or a JSON body)",
    )
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
    distilled: bool | None = Field(
        None,
        description="draw samples and mixes with the checkpoint's distilled few-step student (None: the "
        "checkpoint's choice); false uses the guided teacher, slower",
    )
    inference_timeout_s: float = Field(
        30.0, gt=0, description="a request whose work (queueing included) takes longer gets a 503 and is stopped"
    )
    # uvicorn's, for vae-dogs-serve and the Docker image (a reverse proxy in front may enforce its own)
    limit_concurrency: int = Field(
        256, ge=1, description="open connections and tasks at most; beyond it uvicorn answers 503"
    )
    timeout_keep_alive_s: int = Field(5, ge=1, description="idle keep-alive connections are closed after this")
    head_timeout_s: float = Field(
        10.0, gt=0, description="a connection whose request head is not complete by then is closed"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="a connection whose request body is not complete this long after its head is closed"
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
