"""uvicorn's HTTP protocol with a deadline on the request head, against clients that send their headers slowly."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadTimeoutProtocol(HttpToolsProtocol):
    """A request head must be complete within ``head_timeout_s`` of the connection opening (or of the answer to
    the previous request on it); otherwise the connection is closed. uvicorn's own timeouts cover idle keep-alive
    connections only, so without this a client that trickles header bytes holds its connection forever."""

    head_timeout_s = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)


def with_head_timeout(seconds: float) -> type[HeadTimeoutProtocol]:
    return type("HeadTimeout", (HeadTimeoutProtocol,), {"head_timeout_s": seconds})
