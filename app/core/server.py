"""uvicorn's HTTP protocol with deadlines on the request head and body, against clients that send slowly."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class RequestTimeoutProtocol(HttpToolsProtocol):
    """A request head must be complete within ``head_timeout_s`` of the connection opening (or of the answer to the
    previous request on it), and its body within ``body_timeout_s`` of the head; otherwise the connection is closed.
    uvicorn's own timeouts cover idle keep-alive connections only, so without these a client that trickles bytes (or
    declares a body it never sends) holds its connection, and a few hundred such clients fill every slot."""

    head_timeout_s = 10.0
    body_timeout_s = 30.0
    _timer: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout_s)  # a request without a body completes at once and disarms it

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def with_request_timeouts(head_s: float, body_s: float) -> type[RequestTimeoutProtocol]:
    return type("RequestTimeouts", (RequestTimeoutProtocol,), {"head_timeout_s": head_s, "body_timeout_s": body_s})
