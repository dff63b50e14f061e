"""The bounded worker pool every model and image call runs on, with admission control.

The event loop only reads requests and writes answers; everything that costs CPU (decoding uploads, sampling,
decoding latents, ancestry, PNG and GIF encoding) runs on ``workers`` threads (torch releases the GIL, so with one
torch thread each they use that many cores). Each request is admitted with an estimate of its cost in worker
seconds; when the work already admitted would exceed ``max_queued_s``, it is refused at once with a 503 and a
``Retry-After`` that says when the queue should have drained. Admitted work has a deadline (the inference timeout,
counted from admission) and stops at its next step (``model.interrupt``) once the deadline passes or its client
disconnects; work whose client is gone before it starts is dropped without running.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from app.core.metrics import QUEUED_WORK, SHED
from model import interrupt

T = TypeVar("T")
ClientGone = Callable[[], Awaitable[bool]]
POLL_S = 0.1  # how often a waiting request checks whether its client is still there


class Overloaded(Exception):
    """Admitting the request would queue more work than allowed; retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the service is busy; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class TimedOut(Exception):
    """The request's work did not finish within the inference timeout."""


class ClientDisconnected(Exception):
    """The client went away; its work was stopped."""


class CostModel:
    """Estimated worker seconds per unit of work (one photo, one dog, one ancestry) for each kind of request:
    a moving average of what requests of that kind took, so the estimates fit the machine without settings."""

    def __init__(self, unknown_s: float = 1.0, smoothing: float = 0.2) -> None:
        self.unknown_s, self.smoothing = unknown_s, smoothing
        self.per_unit_s: dict[str, float] = {}

    def estimate(self, kind: str, units: float) -> float:
        return self.per_unit_s.get(kind, self.unknown_s) * units

    def observe(self, kind: str, units: float, seconds: float) -> None:
        measured = seconds / max(units, 1e-9)
        old = self.per_unit_s.get(kind)
        self.per_unit_s[kind] = measured if old is None else old + self.smoothing * (measured - old)


class WorkerPool:
    def __init__(self, workers: int, max_queued_s: float, timeout_s: float) -> None:
        self.workers, self.max_queued_s, self.timeout_s = workers, max_queued_s, timeout_s
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="inference")
        self.costs = CostModel()
        self.queued_s = 0.0  # estimated seconds of admitted work not yet finished (touched on the event loop only)

    def admit(self, cost_s: float) -> None:
        # A request is always admitted into an empty queue, or it could never run however long it waited.
        if self.queued_s > 0 and self.queued_s + cost_s > self.max_queued_s:
            SHED.inc()
            raise Overloaded(max(1, math.ceil(self.queued_s / self.workers)))
        self.queued_s += cost_s
        QUEUED_WORK.set(self.queued_s)

    def _release(self, cost_s: float) -> None:
        self.queued_s = max(0.0, self.queued_s - cost_s)
        QUEUED_WORK.set(self.queued_s)

    async def run(self, fn: Callable[[], T], kind: str, units: float = 1, client_gone: ClientGone | None = None) -> T:
        """Run ``fn()`` on a worker if admitted (else :class:`Overloaded`); :class:`TimedOut` past the deadline,
        :class:`ClientDisconnected` when ``client_gone()`` turns true while it waits or runs."""
        cost_s = self.costs.estimate(kind, units)
        self.admit(cost_s)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.timeout_s
        stop = threading.Event()

        def should_stop() -> bool:
            return stop.is_set() or time.monotonic() > deadline

        def work() -> T:
            if should_stop():  # queued past its deadline, or its client left meanwhile: skip it
                raise interrupt.Interrupted
            started = time.perf_counter()
            with interrupt.stop_when(should_stop):
                result = fn()
            duration = time.perf_counter() - started
            loop.call_soon_threadsafe(self.costs.observe, kind, units, duration)
            return result

        job = loop.run_in_executor(self.executor, work)

        def finished(job: asyncio.Future[T]) -> None:
            # The estimate is released when the work really ends (it goes on for up to one step after a stop).
            self._release(cost_s)
            if not job.cancelled():
                job.exception()  # retrieved: an abandoned job's Interrupted is expected, not worth a log line

        job.add_done_callback(finished)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimedOut
                done, _ = await asyncio.wait({job}, timeout=min(POLL_S, remaining))
                if done:
                    return job.result()
                if client_gone is not None and await client_gone():
                    raise ClientDisconnected
        except interrupt.Interrupted:
            raise TimedOut from None  # stopped by its deadline inside the worker
        except BaseException:  # TimedOut, ClientDisconnected, a cancelled request, an error of fn
            stop.set()
            raise

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
