"""Cooperative stopping of long model work: loops call :func:`check` once per step.

A caller that may lose interest (the service, when a client hangs up or a deadline passes) runs the work inside
``with stop_when(predicate):``; the next :func:`check` in that work raises :class:`Interrupted` once the predicate is
true, so a 64-dog sample or an ancestry fit ends within one sampler or optimiser step. Outside such a block
:func:`check` costs one context-variable read and never raises. Knows nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_should_stop: ContextVar[Callable[[], bool] | None] = ContextVar("should_stop", default=None)


class Interrupted(Exception):
    """The work was stopped by its caller before it finished."""


@contextmanager
def stop_when(should_stop: Callable[[], bool]) -> Iterator[None]:
    token = _should_stop.set(should_stop)
    try:
        yield
    finally:
        _should_stop.reset(token)


def check() -> None:
    should_stop = _should_stop.get()
    if should_stop is not None and should_stop():
        raise Interrupted
