"""The worker pool (app/core/workers.py) without HTTP: off the event loop, admission, deadlines, disconnects."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.core.workers import ClientDisconnected, CostModel, Overloaded, TimedOut, WorkerPool
from model import interrupt


def stepping(steps: int, started: threading.Event | None = None, done: list[int] | None = None):  # type: ignore[no-untyped-def]
    """Work like the sampler's: many short steps, each one a chance to stop. Records how many steps it made."""

    def work() -> int:
        if started is not None:
            started.set()
        for step in range(steps):
            interrupt.check()
            time.sleep(0.005)
            if done is not None:
                done.append(step)
        return steps

    return work


def test_the_event_loop_runs_while_a_worker_computes() -> None:
    pool = WorkerPool(workers=1, max_queued_s=100, timeout_s=30)

    async def main() -> tuple[int, int]:
        job = asyncio.ensure_future(pool.run(stepping(40), "sample"))
        ticks = 0
        while not job.done():
            await asyncio.sleep(0.001)
            ticks += 1
        return ticks, await job

    ticks, result = asyncio.run(main())
    assert result == 40
    assert ticks > 10  # the loop went round many times while the work ran
    pool.close()


def test_a_full_queue_refuses_at_once_with_a_retry_time() -> None:
    pool = WorkerPool(workers=1, max_queued_s=1.5, timeout_s=30)
    pool.costs.per_unit_s["sample"] = 1.0  # as if measured: one second a dog

    async def main() -> None:
        first = asyncio.ensure_future(pool.run(stepping(60), "sample", units=1))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as refused:
            await pool.run(stepping(1), "sample", units=1)  # 1 s queued + 1 s > 1.5 s
        assert refused.value.retry_after_s == 1
        await first

    asyncio.run(main())
    pool.close()


def test_an_empty_queue_admits_even_a_request_larger_than_the_limit() -> None:
    pool = WorkerPool(workers=1, max_queued_s=0.5, timeout_s=30)
    pool.costs.per_unit_s["sample"] = 1.0
    assert asyncio.run(pool.run(stepping(2), "sample", units=64)) == 2
    assert pool.queued_s == 0
    pool.close()


def test_past_the_deadline_the_work_stops_at_its_next_step() -> None:
    pool = WorkerPool(workers=1, max_queued_s=100, timeout_s=0.1)
    steps: list[int] = []
    with pytest.raises(TimedOut):
        asyncio.run(pool.run(stepping(10_000, done=steps), "sample"))
    time.sleep(0.1)
    made = len(steps)
    time.sleep(0.1)
    assert len(steps) == made < 10_000  # it stopped, long before its 10,000 steps
    pool.close()


def test_a_disconnected_client_stops_its_work_and_frees_the_worker() -> None:
    pool = WorkerPool(workers=1, max_queued_s=100, timeout_s=30)
    steps: list[int] = []
    started = threading.Event()

    async def main() -> int:
        gone = False

        async def client_gone() -> bool:
            return gone

        job = asyncio.ensure_future(pool.run(stepping(10_000, started, steps), "ancestry", client_gone=client_gone))
        while not started.is_set():
            await asyncio.sleep(0.01)
        gone = True
        with pytest.raises(ClientDisconnected):
            await job
        return await pool.run(stepping(3), "photo")  # the one worker is free again

    assert asyncio.run(main()) == 3
    assert len(steps) < 10_000
    pool.close()


def test_work_whose_client_left_while_queued_never_runs() -> None:
    pool = WorkerPool(workers=1, max_queued_s=100, timeout_s=30)
    ran: list[str] = []

    async def main() -> None:
        gone = False

        async def client_gone() -> bool:
            return gone

        first = asyncio.ensure_future(pool.run(stepping(40), "sample"))
        queued = asyncio.ensure_future(pool.run(lambda: ran.append("queued"), "photo", client_gone=client_gone))
        await asyncio.sleep(0.05)
        gone = True
        with pytest.raises(ClientDisconnected):
            await queued
        await first

    asyncio.run(main())
    assert ran == []
    pool.close()


def test_costs_follow_what_requests_took() -> None:
    costs = CostModel(unknown_s=1.0, smoothing=0.5)
    assert costs.estimate("mix", 4) == 4.0  # nothing seen yet
    costs.observe("mix", 4, 0.4)
    assert costs.estimate("mix", 2) == pytest.approx(0.2)
    costs.observe("mix", 1, 0.3)
    assert costs.estimate("mix", 1) == pytest.approx(0.2)  # halfway from 0.1 to 0.3
