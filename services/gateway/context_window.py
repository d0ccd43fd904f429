"""How many tokens a prompt may use: the LLM server says, the setting only stands in.

The gateway used to budget ``context_tokens`` from its own setting while the LLM server
enforced its own ``max_model_len``; when the two disagreed, long prompts and follow-ups
got 503. Now the server is asked (``GET /v1/models``: vLLM and our llm_server report
``max_model_len`` per model) and its figure is the budget. ``context_tokens`` is used
only while the server has not said: unreachable, or a server (Ollama) that does not
report a length.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from llm.client import LLMClient, LLMError

log = logging.getLogger(__name__)

# Fields servers use for the context length, in order of trust.
LENGTH_FIELDS = ("max_model_len", "context_length", "context_window")


def reported_length(models: list[dict], model_name: str) -> int | None:
    """The context length the server reports for ``model_name`` (or its only model), if any."""
    chosen = [m for m in models if m.get("id") == model_name] or (
        models if len(models) == 1 else []
    )
    for model in chosen:
        for field in LENGTH_FIELDS:
            value = model.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


class ContextWindow:
    """The prompt budget in tokens, learned from the LLM server and re-checked now and then.

    Re-checked every ``refresh_s`` so a server restarted with another ``max_model_len`` is
    followed without restarting the gateway; a failed check keeps the last figure learned.
    """

    def __init__(
        self,
        llm: LLMClient,
        fallback_tokens: int,
        refresh_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._llm = llm
        self._fallback_tokens = fallback_tokens
        self._refresh_s = refresh_s
        self._clock = clock
        self._learned: int | None = None
        self._checked_at: float | None = None

    @property
    def source(self) -> str:
        """Where the current figure comes from, for logs and readiness reports."""
        return "llm_server" if self._learned is not None else "setting"

    async def tokens(self) -> int:
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._refresh_s:
            self._checked_at = now
            await self._refresh()
        return self._learned if self._learned is not None else self._fallback_tokens

    async def _refresh(self) -> None:
        try:
            length = reported_length(await self._llm.list_models(), self._llm.model)
        except LLMError as exc:
            log.debug("context window: %s", exc)
            return
        if length is None:
            if self._learned is None:
                return
            log.warning("LLM server no longer reports max_model_len; keeping %d", self._learned)
            return
        if length != self._learned:
            log.info(
                "context window: %d tokens, from the LLM server's /v1/models (model %s)",
                length,
                self._llm.model,
            )
        self._learned = length
