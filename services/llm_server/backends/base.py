"""The contract between the HTTP layer and whatever produces tokens (HF, our engine, a remote server).

The HTTP layer validates a request, turns it into one ``GenerationParams`` per choice and
reads ``Delta`` objects from ``Backend.generate``; it never knows which backend runs.
Closing the iterator early (client gone, stop reached) must stop the generation: that is
how cancellation reaches a backend.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# A chat conversation (list of {"role", "content": str}) or a raw completion prompt.
Messages = list[dict[str, str]]
Prompt = str | Messages


class BackendError(RuntimeError):
    """A backend failed or refused a request; ``status`` says which HTTP status the client sees."""

    def __init__(self, message: str, status: int = 500, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class BackendUnavailable(BackendError):
    """The backend cannot serve at all (missing package, unreachable upstream)."""

    def __init__(self, message: str, status: int = 503, code: str | None = "backend_unavailable"):
        super().__init__(message, status, code)


@dataclass
class GenerationParams:
    """Sampling and stopping knobs for ONE choice (``n`` is expanded by the HTTP layer)."""

    max_tokens: int | None  # None only where the backend applies its own default (remote)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    response_format: dict[str, Any] | None = None


@dataclass
class TokenLogprob:
    """Log-probability of one generated token, with the most likely alternatives at that step."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Delta:
    """A piece of one choice's output: new text, how many tokens made it, and the finish when done.

    ``prompt_tokens``/``completion_tokens`` are set on the final delta by backends that know
    better than counting deltas (a remote server's usage, an engine's own count).
    """

    text: str = ""
    num_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@runtime_checkable
class Backend(Protocol):
    """What the server needs from a token producer."""

    model_name: str
    max_model_len: int
    # Most ``top_logprobs`` the backend can return (-1: no logprobs at all).
    max_top_logprobs: int
    # Whether ``response_format`` json_object/json_schema is enforced while decoding.
    supports_response_format: bool

    async def start(self) -> None:
        """Load weights / open connections; called once in the server's lifespan."""

    async def close(self) -> None:
        """Release what ``start`` took."""

    def count_prompt_tokens(self, prompt: Prompt) -> int | None:
        """Tokens the prompt takes (chat template applied), or None when unknown (remote)."""

    def generate(
        self, prompt: Prompt, params: GenerationParams, request_id: str
    ) -> AsyncGenerator[Delta, None]:
        """Stream one choice; the last delta has ``finish_reason`` set.

        An async generator, not just an iterator: the caller closes it early (``aclose``)
        when the client goes away, so the backend can stop generating.
        """

    def stats(self) -> dict[str, float]:
        """Numbers for /metrics (kv_blocks_used, kv_blocks_free, prefix_cache_hit_rate, ...)."""
