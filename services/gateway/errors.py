"""The gateway's exception hierarchy and the one place that maps errors to HTTP responses.

Every error a client sees has the body ``{"error": {"code", "message"}}``; services raise
``ApiError`` subclasses with user-facing messages and never build responses themselves.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with a status code, a stable machine code and a message for people."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status_code, code = 400, "bad_request"


class Unauthorized(ApiError):
    status_code, code = 401, "unauthorized"


class Forbidden(ApiError):
    status_code, code = 403, "forbidden"


class NotFound(ApiError):
    status_code, code = 404, "not_found"


class Conflict(ApiError):
    status_code, code = 409, "conflict"


class InvalidEntity(ApiError):
    """422 with every problem found (``problems``: [{field, message}]), e.g. draft field values."""

    status_code, code = 422, "validation_error"

    def __init__(self, message: str, problems: list[dict[str, str]], code: str | None = None):
        super().__init__(message)
        self.problems = problems
        if code:
            self.code = code


class PayloadTooLarge(ApiError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status_code, code = 415, "unsupported_media_type"


class TooManyRequests(ApiError):
    """A rate limit or lockout; ``retry_after`` seconds go out as the Retry-After header."""

    status_code, code = 429, "too_many_requests"

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamUnavailable(ApiError):
    """A backend the request needs (LLM, vector store, queue) failed."""

    status_code, code = 502, "upstream_unavailable"


_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


def error_response(
    status_code: int,
    code: str,
    message: str,
    headers: dict | None = None,
    problems: list[dict[str, str]] | None = None,
) -> JSONResponse:
    """The one shape of every error body (``problems`` only where an input has several)."""
    error: dict = {"code": code, "message": message}
    if problems is not None:
        error["problems"] = problems
    return JSONResponse({"error": error}, status_code=status_code, headers=headers)


def _validation_problems(exc: RequestValidationError) -> list[dict[str, str]]:
    """Every problem FastAPI found in the request, as ``{"field", "message"}``."""
    return [
        {
            "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request",
            "message": err.get("msg", "invalid"),
        }
        for err in exc.errors()
    ]


def _validation_message(problems: list[dict[str, str]]) -> str:
    return "invalid request: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems)


def install_error_handlers(app: FastAPI) -> None:
    """Map our errors, FastAPI validation errors, HTTP errors and crashes to the error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        problems = exc.problems if isinstance(exc, InvalidEntity) else None
        return error_response(exc.status_code, exc.code, exc.message, headers, problems)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _validation_problems(exc)
        return error_response(
            422, "validation_error", _validation_message(problems), problems=problems
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES_BY_STATUS.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = f"{message.lower()}: {request.method} {request.url.path}"
        return error_response(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")
