"""App factory of the LLM server: ``create_app(settings, backend=None)`` builds a FastAPI app.

No globals: each app owns its backend, tracker and metrics, so tests run several side by
side. Without a backend argument, the one ``settings.llm_backend`` names is built and
started in the lifespan (a passed-in backend is the caller's to start and close). Every
error leaves in OpenAI's shape, mapped here and only here.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.settings import Settings

from .backends import build_backend
from .backends.base import Backend, BackendError
from .errors import APIError, error_body
from .limits import BodySizeLimit
from .routes import router
from .state import ServerState

log = logging.getLogger(__name__)
_COUNTED_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/models"}


class _CountRequests:
    """ASGI middleware: count /v1/* requests by endpoint and status (streams included)."""

    def __init__(self, app: ASGIApp, state: ServerState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in _COUNTED_PATHS:
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.state.metrics.requests.labels(scope["path"], str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


class _RequireKey:
    """ASGI middleware: when ``llm_api_key`` is set, /v1/* wants ``Authorization: Bearer <key>`` (else 401).

    The gateway sends the same setting, so one variable secures both ends."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith("/v1/"):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = error_body(
                    "missing or wrong API key: send Authorization: Bearer <ENCLAVE_LLM_API_KEY>",
                    "invalid_request_error",
                    None,
                    "invalid_api_key",
                )
                await JSONResponse(body, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    return (f"{param}: {first.get('msg')}" if param else str(first.get("msg"))), param


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(BackendError)
    async def backend_error(request: Request, exc: BackendError) -> JSONResponse:
        kind = "invalid_request_error" if 400 <= exc.status < 500 else "upstream_error"
        return JSONResponse(error_body(exc.message, kind, None, exc.code), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(
            error_body(message, "invalid_request_error", param, "invalid_value"), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(
            error_body(f"internal error: {type(exc).__name__}", "internal_error"), status_code=500
        )


def create_app(settings: Settings, backend: Backend | None = None) -> FastAPI:
    """The LLM server app; ``backend`` (already started) replaces the one settings would build."""
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned: Backend | None = None
        if backend is None:
            started = time.monotonic()
            try:
                owned = build_backend(settings)
                await owned.start()
            except BackendError as exc:
                log.error("the %s backend cannot start: %s", settings.llm_backend, exc.message)
                raise
            log.info("backend %s ready in %.1f s", settings.llm_backend, time.monotonic() - started)
            state.attach(owned)
        else:
            state.attach(backend)
        state.started_at = time.time()
        try:
            yield
        finally:
            if owned is not None:
                await owned.close()

    # No /docs or /redoc: their pages pull scripts from a CDN, and nothing here may phone home.
    app = FastAPI(
        title="Enclave LLM server",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.llm = state
    app.include_router(router)
    _install_error_handlers(app)
    if settings.llm_api_key:
        app.add_middleware(_RequireKey, api_key=settings.llm_api_key)
    app.add_middleware(_CountRequests, state=state)
    app.add_middleware(BodySizeLimit, max_bytes=settings.llm_max_body_bytes)
    return app
