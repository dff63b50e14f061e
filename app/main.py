"""The ASGI app: ``uvicorn app.main:app`` (or ``vae-dogs-serve``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError

from app.api.routes import ancestry, breeds, codec, generate, health, page
from app.core.config import Settings, get_settings
from app.core.inference import ModelService, UnknownBreedError
from app.core.metrics import describe_model, instrument
from app.core.middleware import BodyLimit, HeadAsGet, SecurityHeaders
from app.openapi import describe_bodies, document_model
from model.latent_ops import LatentOpError

log = logging.getLogger("vae_dogs")


class StartupError(RuntimeError):
    """Start-up cannot go on; uvicorn prints only this one line."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        settings = app.dependency_overrides.get(get_settings, get_settings)()
    except ValidationError as err:  # a VAE_DOGS_* variable out of range: say which, in one line
        problems = "; ".join(f"VAE_DOGS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in err.errors())
        raise StartupError(f"vae-dogs cannot start: {problems}") from None
    try:
        service = ModelService.load(settings)
    except Exception as err:  # checkpoint missing/corrupt, cuda asked for and absent, ...
        where = "" if str(settings.checkpoint) in str(err) else f" (checkpoint: {settings.checkpoint})"
        raise StartupError(f"vae-dogs cannot start: {err}{where}") from None
    app.state.model_service = service
    describe_model(service.card, str(service.device))
    document_model(app, settings, service.breeds, service.model.vae.cfg.latent_dim)
    try:
        yield
    finally:
        app.state.model_service = None
        service.close()


def create_app() -> FastAPI:
    # /docs and /redoc from the Swagger UI and ReDoc files the fastapi-offline package ships: no CDN, no network.
    app = FastAPIOffline(
        title="vae-dogs",
        version="0.1.0",
        summary="A breed-conditional VAE on dog photos: sample, mix, identify, encode and decode dogs.",
        lifespan=lifespan,
    )
    app.include_router(page.router)
    for module in (health, breeds, codec, generate, ancestry):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=page.STATIC_DIR), name="static")
    describe_bodies(app)
    instrument(app)
    # Outermost last: the body limit sees the raw request first; every answer gets the security headers.
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit, max_bytes=lambda scope: body_limit(scope, get_settings()))
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(UnknownBreedError)
    @app.exception_handler(LatentOpError)
    async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The default handler echoes the input, which fails to render when it holds NaN or infinity.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": user_message(e), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    return app


SMALL_JSON_BYTES = 64 * 1024  # far more than a mix of every breed or a morph between two latents needs


def body_limit(scope: dict, settings: Settings) -> int:
    """The largest body a request may send: an upload (multipart or form) ``max_body_bytes``; anything else is read
    as JSON (FastAPI parses a body without a content type as JSON too), and no legitimate request needs more than
    ``max_json_bytes`` (POST /decode) or ``SMALL_JSON_BYTES`` (the others): parsing stays short."""
    content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type in (b"multipart/form-data", b"application/x-www-form-urlencoded"):
        return settings.max_body_bytes
    json_limit = settings.max_json_bytes if scope["path"] == "/decode" else SMALL_JSON_BYTES
    return min(json_limit, settings.max_body_bytes)


def user_message(error: dict) -> str:
    """A validation error's message in the user's terms: pydantic's own, except where it names Python internals."""
    message = str(error.get("msg", ""))
    if "UploadFile" in message:  # a form field sent as text where a file belongs
        return "expected an uploaded file here (multipart/form-data, e.g. curl -F file=@dog.jpg), not a text field"
    return message


class OneLineStartupErrors:
    """ASGI wrapper: a failed start-up is logged as its one-line reason, not a traceback."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def __getattr__(self, name: str):  # expose .state, .openapi(), ... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def send_short(message):  # type: ignore[no-untyped-def]
            if message["type"] == "lifespan.startup.failed" and StartupError.__name__ in message.get("message", ""):
                lines = [line for line in message["message"].splitlines() if line.strip()]
                message = {**message, "message": lines[-1].split(": ", 1)[-1]}
            await send(message)

        await self.app(scope, receive, send_short)


fastapi_app = create_app()
app = OneLineStartupErrors(fastapi_app)


def serve() -> None:
    """Console entry point ``vae-dogs-serve``: uvicorn on 127.0.0.1:8000 with the settings' connection limits.

    HOST and PORT override the address; WEB_CONCURRENCY (as for uvicorn's own CLI) sets the number of worker
    processes, each with its own copy of the model. ``VAE_DOGS_LIMIT_CONCURRENCY`` caps open connections (beyond it
    uvicorn answers 503), ``VAE_DOGS_TIMEOUT_KEEP_ALIVE_S`` closes idle ones, ``VAE_DOGS_HEAD_TIMEOUT_S`` those
    that send their request head too slowly and ``VAE_DOGS_BODY_TIMEOUT_S`` those that send its body too slowly.
    """
    import os

    import uvicorn

    from app.core.server import with_request_timeouts

    settings = get_settings()
    uvicorn.run(
        "app.main:app",
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        workers=int(os.environ.get("WEB_CONCURRENCY", "1")),
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.timeout_keep_alive_s,
        http=with_request_timeouts(settings.head_timeout_s, settings.body_timeout_s),
        server_header=False,  # no "server: uvicorn" on every answer
    )
