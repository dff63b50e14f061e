"""The loaded model, the breed names, and the worker pool its calls run on (as HTTP)."""

from __future__ import annotations

import difflib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
from fastapi import HTTPException, Request

from app.core.config import Settings
from app.core.workers import ClientDisconnected, Overloaded, TimedOut, WorkerPool
from model import checkpoint, latent_ops
from model.prior import DogModel
from model.sampler import SamplerSettings

T = TypeVar("T")
log = logging.getLogger("vae_dogs")


ECHO_CHARS = 60  # user text quoted back in an error message is cut to this


def echo(text: str) -> str:
    """User text for an error message: quoted, and cut short (a 1 MB name is not sent back)."""
    return repr(text) if len(text) <= ECHO_CHARS else repr(text[:ECHO_CHARS]) + f"... ({len(text):,} characters)"


class UnknownBreedError(ValueError):
    """A breed name the model does not know; carries close matches for the error message."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else "; GET /breeds lists the known breeds"
        super().__init__(f"unknown breed {echo(name)}{hint}")


def worker_count(settings: Settings) -> int:
    """The setting, or as many workers as the cores hold at ``torch_threads`` threads each."""
    if settings.workers:
        return settings.workers
    return max(1, (os.cpu_count() or 1) // (settings.torch_threads or 1))


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
    pool: WorkerPool = field(init=False)

    def __post_init__(self) -> None:
        self.breeds = [b["name"] for b in self.card["breeds"]]
        self._index = {b: i for i, b in enumerate(self.breeds)}
        self.pool = WorkerPool(
            worker_count(self.settings), self.settings.max_queued_s, self.settings.inference_timeout_s
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
        if settings.distilled is not None:
            if settings.distilled and not model.has_student:
                raise RuntimeError(
                    f"VAE_DOGS_DISTILLED=true needs a checkpoint with a distilled student, and {settings.checkpoint} "
                    "has none (unset it, or make one with python -m training.distill)"
                )
            sampling = replace(sampling, distilled=settings.distilled)
        log.info("loaded %s (%d breeds) on %s", settings.checkpoint, len(card["breeds"]), device)
        service = cls(model=model, card=card, device=device, settings=settings, sampling=sampling)
        service.warm_up()
        return service

    def warm_up(self) -> None:
        """A photo and a dog through the model, twice: the first calls are slow (allocation, kernel choice), and
        the second's times are the first cost estimates of the worker pool (unseen kinds cost a dog)."""
        photo = torch.rand(1, 3, self.model.photo_size, self.model.photo_size)
        weights = torch.ones(len(self.breeds))
        times = {}
        for kind, work in (
            ("photo", lambda: latent_ops.breed_probabilities(self.model, photo)),
            ("mix", lambda: latent_ops.mix(self.model, weights, 1, 0, sampling=self.sampling)),
        ):
            for _ in range(2):
                started = time.perf_counter()
                work()
                times[kind] = time.perf_counter() - started
        self.pool.costs.per_unit_s.update(photo=times["photo"], mix=times["mix"], sample=times["mix"])
        self.pool.costs.unknown_s = times["mix"]

    @property
    def image_size(self) -> int:
        return self.model.vae.cfg.image_size

    def breed_index(self, name: str) -> int:
        key = name.strip().lower().replace(" ", "_")
        if key in self._index:
            return self._index[key]
        # No breed name is near a very long one, and difflib's cost grows with the product of the lengths.
        near = difflib.get_close_matches(key, self.breeds, n=3, cutoff=0.5) if len(key) <= 2 * ECHO_CHARS else []
        raise UnknownBreedError(name, near)

    def weights(self, breeds: dict[str, float]) -> torch.Tensor:
        """Breed-name weights -> a dense (n_breeds,) tensor (validated later by latent_ops)."""
        dense = torch.zeros(len(self.breeds), dtype=torch.float64)
        for name, weight in breeds.items():
            dense[self.breed_index(name)] += weight
        return dense

    async def run(self, fn: Callable[[], T], kind: str, units: float = 1, request: Request | None = None) -> T:
        """Run ``fn()`` on the worker pool (app/core/workers.py), as HTTP: 503 with ``Retry-After`` when the queue
        is full or the work timed out; a client that disconnected gets nothing (its work is stopped)."""
        try:
            return await self.pool.run(fn, kind, units, request.is_disconnected if request is not None else None)
        except Overloaded as err:
            raise HTTPException(
                503,
                detail=f"the service is busy; retry in {err.retry_after_s} s",
                headers={"Retry-After": str(err.retry_after_s)},
            ) from None
        except TimedOut:
            raise HTTPException(
                503,
                detail=f"the request took longer than the {self.settings.inference_timeout_s:g}-s limit; "
                "ask for fewer or smaller images, or retry later",
                headers={"Retry-After": str(max(1, math.ceil(self.pool.queued_s / self.pool.workers)))},
            ) from None
        except ClientDisconnected:
            # 499 in nginx's terms: nobody reads it; uvicorn drops the response of a closed connection.
            raise HTTPException(499, detail="the client closed the connection") from None

    def close(self) -> None:
        self.pool.close()
