"""Dynamic micro-batching: concurrent requests for one model function run as one batch.

Like Triton's dynamic batcher, but opportunistic: a request that finds the model idle runs at once (no
added latency when the service is quiet); requests that arrive while a call is running queue up and run
together as soon as it ends, or after ``window_s`` at the latest, in batches of at most ``max_rows`` rows.
On a CPU a decoder call for 16 images costs far less than 16 calls for one, so under load this buys
throughput. The function must be row-wise: output row i depends only on input row i.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import torch
from torch import Tensor

Runner = Callable[..., Awaitable[Tensor]]


class MicroBatcher:
    def __init__(
        self,
        fn: Callable[..., Tensor],
        run: Runner,
        window_s: float,
        max_rows: int,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self.fn, self.run, self.window_s, self.max_rows = fn, run, window_s, max_rows
        self.observe = observe or (lambda rows: None)
        self.pending: list[tuple[tuple[Tensor, ...], asyncio.Future[Tensor]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.running = 0  # model calls in flight

    async def __call__(self, *inputs: Tensor) -> Tensor:
        rows = inputs[0].shape[0]
        idle = self.running == 0 and not self.pending
        if self.window_s <= 0 or rows >= self.max_rows or idle:  # off, a batch already, or nothing to wait for
            self.observe(rows)
            self.running += 1
            try:
                return await self.run(self.fn, *inputs)
            finally:
                self.running -= 1
                if self.pending and self.running == 0:  # what queued meanwhile goes now
                    self._flush()
        future: asyncio.Future[Tensor] = asyncio.get_running_loop().create_future()
        self.pending.append((inputs, future))
        if sum(job[0][0].shape[0] for job in self.pending) >= self.max_rows:
            self._flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.window_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        taken, rows = [], 0
        while self.pending and rows + self.pending[0][0][0].shape[0] <= self.max_rows:
            job = self.pending.pop(0)
            taken.append(job)
            rows += job[0][0].shape[0]
        if self.pending:  # what did not fit waits for the next window
            self.timer = asyncio.get_running_loop().call_later(self.window_s, self._flush)
        if taken:
            asyncio.ensure_future(self._run(taken))

    async def _run(self, jobs: list[tuple[tuple[Tensor, ...], asyncio.Future[Tensor]]]) -> None:
        sizes = [job[0][0].shape[0] for job in jobs]
        merged = [torch.cat(parts) for parts in zip(*(job[0] for job in jobs), strict=True)]
        self.observe(sum(sizes))
        self.running += 1
        try:
            outputs = (await self.run(self.fn, *merged)).split(sizes)
        except Exception as err:  # every request of the batch gets the error
            for _, future in jobs:
                if not future.done():
                    future.set_exception(err)
            return
        finally:
            self.running -= 1
            if self.pending and self.running == 0:
                self._flush()
        for (_, future), output in zip(jobs, outputs, strict=True):
            if not future.done():  # a client that went away cancelled its future
                future.set_result(output)
