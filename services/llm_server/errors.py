"""The LLM server's errors, each carrying the HTTP status and OpenAI error fields the client sees.

Everything a user can get wrong raises one of these before any token is generated; the app
maps them to ``{"error": {"message", "type", "param", "code"}}`` in one place (app.py).
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """Base of the hierarchy: a message for the user plus OpenAI's error fields."""

    status = 500
    error_type = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequest(APIError):
    """Malformed messages, bad or unsupported parameters, a prompt that does not fit: 400."""

    status = 400
    error_type = "invalid_request_error"


class ModelNotFound(APIError):
    """The request names a model this server does not serve: 404."""

    status = 404
    error_type = "invalid_request_error"

    def __init__(self, requested: str, served: list[str]):
        super().__init__(
            f"The model '{requested}' does not exist; this server serves: {', '.join(served)}",
            param="model",
            code="model_not_found",
        )


class QueueFull(APIError):
    """More requests wait than ``llm_max_queue`` allows: 503, the client may retry later."""

    status = 503
    error_type = "server_overloaded"

    def __init__(self, max_queue: int):
        super().__init__(
            f"The server is overloaded: {max_queue} requests are already waiting "
            "(ENCLAVE_LLM_MAX_QUEUE); retry later",
            code="queue_full",
        )


class UpstreamError(APIError):
    """The backend failed or refused; status and message come from the backend."""

    error_type = "upstream_error"


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
