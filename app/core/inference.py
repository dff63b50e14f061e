"""The loaded model and the single worker thread that runs inference off the event loop."""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
from fastapi import HTTPException

from app.core.batching import MicroBatcher
from app.core.config import Settings
from app.core.metrics import BATCH_ROWS
from model import checkpoint, latent_ops
from model.prior import DogModel
from model.sampler import SamplerSettings

T = TypeVar("T")
log = logging.getLogger("vae_dogs")


class UnknownBreedError(ValueError):
    """A breed name the model does not know; carries close matches for the error message."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else "; GET /breeds lists the known breeds"
        super().__init__(f"unknown breed {name!r}{hint}")


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("VAE_DOGS_DEVICE=cuda but no CUDA device is available")
    return torch.device(setting)


@dataclass
class ModelService:
    model: DogModel
    card: dict[str, Any]
    device: torch.device
    settings: Settings
    sampling: SamplerSettings  # the checkpoint's, with the environment's overrides
    breeds: list[str] = field(init=False)
    # One inference thread: the model is not shared across threads. Throughput comes from micro-batching
    # and, beyond that, from worker processes (WEB_CONCURRENCY).
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="inference"))

    def __post_init__(self) -> None:
        self.breeds = [b["name"] for b in self.card["breeds"]]
        self._index = {b: i for i, b in enumerate(self.breeds)}
        window, rows = self.settings.batch_window_ms / 1000, self.settings.max_batch_size
        # The two expensive, row-wise calls: the decoder (mix, sample) and the breed head (identify).
        self.decode = MicroBatcher(
            lambda z, w: latent_ops.decode(self.model, z, w),
            self.run,
            window,
            rows,
            BATCH_ROWS.labels("decode").observe,
        )
        self.classify = MicroBatcher(
            lambda x: latent_ops.breed_probabilities(self.model, x),
            self.run,
            window,
            rows,
            BATCH_ROWS.labels("classify").observe,
        )

    @classmethod
    def load(cls, settings: Settings) -> ModelService:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        device = resolve_device(settings.device)
        model, card = checkpoint.load(settings.checkpoint, device)
        sampling = model.sampling
        if settings.sampling_steps:
            sampling = replace(sampling, steps=settings.sampling_steps)
        if settings.autoguidance is not None:
            if not model.has_guide and settings.autoguidance != 1:
                raise RuntimeError(
                    f"VAE_DOGS_AUTOGUIDANCE={settings.autoguidance:g} needs a checkpoint with an autoguidance guide, "
                    f"and {settings.checkpoint} has none (unset it, or set it to 1)"
                )
            sampling = replace(sampling, autoguidance=settings.autoguidance)
        log.info("loaded %s (%d breeds) on %s", settings.checkpoint, len(card["breeds"]), device)
        return cls(model=model, card=card, device=device, settings=settings, sampling=sampling)

    @property
    def image_size(self) -> int:
        return self.model.vae.cfg.image_size

    def breed_index(self, name: str) -> int:
        key = name.strip().lower().replace(" ", "_")
        if key in self._index:
            return self._index[key]
        raise UnknownBreedError(name, difflib.get_close_matches(key, self.breeds, n=3, cutoff=0.5))

    def weights(self, breeds: dict[str, float]) -> torch.Tensor:
        """Breed-name weights -> a dense (n_breeds,) tensor (validated later by latent_ops)."""
        dense = torch.zeros(len(self.breeds), dtype=torch.float64)
        for name, weight in breeds.items():
            dense[self.breed_index(name)] += weight
        return dense

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the inference thread; past the timeout the client gets a 503 (the call still finishes)."""
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))
        try:
            return await asyncio.wait_for(asyncio.shield(job), self.settings.inference_timeout_s)
        except TimeoutError:
            raise HTTPException(
                503,
                detail=f"inference took longer than {self.settings.inference_timeout_s:g} s; "
                "try fewer or smaller images, or retry later",
            ) from None

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
