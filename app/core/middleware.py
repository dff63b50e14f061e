"""ASGI middleware: the body limit while it streams in, HEAD on GET routes, security headers."""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Swagger UI and ReDoc start from an inline script and ReDoc runs a worker from a blob; all of it is served here.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"


class BodyLimit:
    """Refuse a request body over ``max_bytes(scope)`` with a 413: at once when its Content-Length says so, else as
    soon as the bytes read exceed it (chunked uploads), so no more than the limit is ever read or spooled to disk."""

    def __init__(self, app: ASGIApp, max_bytes: Callable[[Scope], int]) -> None:
        self.app, self.max_bytes = app, max_bytes

    @staticmethod
    def too_large(limit: int) -> HTTPException:
        # Connection: close, so that uvicorn drops the connection rather than reading the rest of the body.
        return HTTPException(
            413, detail=f"the request body is larger than the {limit:,}-byte limit", headers={"Connection": "close"}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self.reject(limit, scope, send)
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise self.too_large(limit)  # FastAPI's body parsing passes HTTPExceptions on: a 413 answer
            return message

        await self.app(scope, limited_receive, send)

    async def reject(self, limit: int, scope: Scope, send: Send) -> None:
        error = self.too_large(limit)
        response = JSONResponse({"detail": error.detail}, status_code=413, headers=error.headers)
        await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


class HeadAsGet:
    """HEAD on any GET route: run it as GET and send the headers only (FastAPI routes answer HEAD with 405)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class SecurityHeaders:
    """``nosniff``, no referrer, no framing, and a content security policy fitting each kind of answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/" or path.startswith("/static/"):
            policy = PAGE_CSP
        elif path in ("/docs", "/redoc") or path.startswith("/static-offline-docs/"):
            policy = DOCS_CSP
        else:
            policy = API_CSP

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", policy.encode()),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)
