"""Micro-batching (app/core/batching.py) and the inference timeout, without HTTP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import torch
from fastapi import HTTPException

from app.core.batching import MicroBatcher
from app.core.config import Settings
from app.core.inference import ModelService


class Recorder:
    """A row-wise function that remembers the batch sizes it was called with."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return x * 10 + y


async def direct(fn, *args):  # type: ignore[no-untyped-def]
    await asyncio.sleep(0.01)  # like the inference thread: the event loop moves on while the model runs
    return fn(*args)


def run_concurrently(batcher: MicroBatcher, sizes: list[int]) -> list[torch.Tensor]:
    async def main() -> list[torch.Tensor]:
        jobs = [batcher(torch.full((n,), float(i)), torch.arange(n, dtype=torch.float32)) for i, n in enumerate(sizes)]
        return list(await asyncio.gather(*jobs))

    return asyncio.run(main())


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    fn = Recorder()
    outputs = run_concurrently(MicroBatcher(fn, direct, window_s=0.05, max_rows=64), [1, 3, 2, 4])
    # The first finds the model idle and runs at once; the others queue meanwhile and share one call.
    assert fn.calls == [1, 9]
    for i, (out, n) in enumerate(zip(outputs, [1, 3, 2, 4], strict=True)):
        assert torch.equal(out, torch.full((n,), 10.0 * i) + torch.arange(n))


def test_a_full_batch_runs_without_waiting_and_the_rest_waits_for_the_next() -> None:
    fn = Recorder()
    batch_sizes: list[int] = []
    batcher = MicroBatcher(fn, direct, window_s=0.05, max_rows=4, observe=batch_sizes.append)
    outputs = run_concurrently(batcher, [1, 2, 2, 3, 1])
    assert fn.calls == [1, 4, 4] and batch_sizes == [1, 4, 4]
    assert [len(o) for o in outputs] == [1, 2, 2, 3, 1]


def test_window_zero_turns_batching_off() -> None:
    fn = Recorder()
    run_concurrently(MicroBatcher(fn, direct, window_s=0, max_rows=64), [1, 1, 1])
    assert fn.calls == [1, 1, 1]


def test_an_error_reaches_every_request_of_the_batch() -> None:
    def broken(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise ValueError("decoder exploded")

    with pytest.raises(ValueError, match="decoder exploded"):
        run_concurrently(MicroBatcher(broken, direct, window_s=0.01, max_rows=64), [1, 2, 3])


def test_slow_inference_becomes_a_503(tiny_checkpoint: Path) -> None:
    service = ModelService.load(Settings(checkpoint=tiny_checkpoint, device="cpu", inference_timeout_s=0.05))
    try:
        with pytest.raises(HTTPException) as caught:
            asyncio.run(service.run(time.sleep, 0.5))
        assert caught.value.status_code == 503 and "longer than 0.05 s" in caught.value.detail
    finally:
        service.close()
