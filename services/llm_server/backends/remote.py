"""Forward generations to any OpenAI-compatible server (vLLM, Ollama, another llm_server).

Every choice is one streamed upstream request (``n=1`` with the choice's own seed), read as
SSE and re-emitted as deltas, so streaming passes through token by token and closing the
iterator closes the upstream connection, which cancels the upstream generation. Validation
that needs the tokenizer (prompt length) is left to the upstream, whose 4xx errors reach
the client with their message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx

from .base import BackendError, BackendUnavailable, Delta, GenerationParams, Prompt, TokenLogprob

if TYPE_CHECKING:
    from services.settings import Settings

log = logging.getLogger(__name__)


def _error_message(body: bytes) -> str:
    try:
        payload = json.loads(body)
        error = payload.get("error", payload)
        return str(error.get("message") if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        return body[:500].decode("utf-8", "replace")


def _chat_logprobs(choice: dict[str, Any]) -> list[TokenLogprob]:
    content = (choice.get("logprobs") or {}).get("content") or []
    return [
        TokenLogprob(
            e["token"],
            e["logprob"],
            [(t["token"], t["logprob"]) for t in e.get("top_logprobs") or []],
        )
        for e in content
    ]


def _completion_logprobs(choice: dict[str, Any]) -> list[TokenLogprob]:
    lp = choice.get("logprobs") or {}
    tokens, values = lp.get("tokens") or [], lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    return [
        TokenLogprob(t, v, list((top or {}).items()))
        for t, v, top in zip(tokens, values, tops, strict=False)
    ]


class RemoteBackend:
    """Streams each choice from ``base_url`` (an OpenAI-compatible ``.../v1``)."""

    kind = "remote"  # the ENCLAVE_LLM_BACKEND value that selects it

    max_top_logprobs = 20
    supports_response_format = True

    def __init__(
        self,
        base_url: str,
        model_name: str,
        max_model_len: int,
        *,
        remote_model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 300.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.max_model_len = max_model_len
        self._remote_model = remote_model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s, connect=5.0)
        self._client: httpx.AsyncClient | None = None
        self._counts = {"upstream_requests": 0, "upstream_errors": 0}

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteBackend:
        if not settings.llm_remote_url:
            raise BackendUnavailable(
                "llm_backend=remote needs ENCLAVE_LLM_REMOTE_URL (an OpenAI-compatible .../v1)"
            )
        return cls(
            settings.llm_remote_url,
            settings.llm_model,
            settings.llm_max_model_len,
            remote_model=settings.llm_remote_model,
            api_key=settings.llm_remote_api_key,
            timeout_s=settings.llm_timeout_s,
        )

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self._timeout, headers=self._headers, trust_env=False
        )
        try:
            await self._discover()
        except BackendError as exc:  # the upstream may start after us; retried on first request
            log.warning("remote LLM not reachable yet: %s", exc.message)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _discover(self) -> None:
        """Learn the upstream model name (unless configured) and its context length if it says."""
        assert self._client is not None
        try:
            response = await self._client.get(f"{self.base_url}/models")
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"remote LLM at {self.base_url} unreachable: {exc}", status=502
            ) from exc
        if response.status_code != 200:
            raise BackendUnavailable(
                f"remote LLM at {self.base_url} answered {response.status_code} to /models: "
                f"{_error_message(response.content)}",
                status=502,
            )
        models = response.json().get("data") or []
        if not models:
            raise BackendUnavailable(f"remote LLM at {self.base_url} lists no models", status=502)
        chosen = next((m for m in models if m.get("id") == self._remote_model), models[0])
        self._remote_model = self._remote_model or chosen["id"]
        if isinstance(chosen.get("max_model_len"), int):
            self.max_model_len = min(self.max_model_len, chosen["max_model_len"])

    def count_prompt_tokens(self, prompt: Prompt) -> None:
        return None  # the upstream counts (and reports usage)

    def _payload(self, prompt: Prompt, params: GenerationParams) -> tuple[str, dict[str, Any]]:
        chat = not isinstance(prompt, str)
        payload: dict[str, Any] = {
            "model": self._remote_model,
            "stream": True,
            "n": 1,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        payload["messages" if chat else "prompt"] = prompt
        if params.max_tokens is not None:
            payload["max_tokens"] = params.max_tokens
        if params.seed is not None:
            payload["seed"] = params.seed
        if params.stop:
            payload["stop"] = params.stop
        if params.logprobs:
            payload.update(
                {"logprobs": True, "top_logprobs": params.top_logprobs}
                if chat
                else {"logprobs": params.top_logprobs}
            )
        if params.response_format:
            payload["response_format"] = params.response_format
        # vLLM-style extras only when used, so strict OpenAI servers are not offended.
        if params.top_k > 0:
            payload["top_k"] = params.top_k
        if params.min_p > 0:
            payload["min_p"] = params.min_p
        if params.ignore_eos:
            payload["ignore_eos"] = True
        return ("/chat/completions" if chat else "/completions"), payload

    async def generate(
        self, prompt: Prompt, params: GenerationParams, request_id: str
    ) -> AsyncGenerator[Delta, None]:
        if self._client is None:
            raise BackendUnavailable("the remote backend is not started")
        if self._remote_model is None:
            await self._discover()
        path, payload = self._payload(prompt, params)
        chat = not isinstance(prompt, str)
        finish: str | None = None
        usage: dict[str, Any] = {}
        self._counts["upstream_requests"] += 1
        request = self._client.build_request("POST", f"{self.base_url}{path}", json=payload)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self._counts["upstream_errors"] += 1
            raise BackendError(
                f"remote LLM at {self.base_url} unreachable: {exc}",
                status=502,
                code="upstream_unreachable",
            ) from exc
        try:
            if response.status_code != 200:
                self._counts["upstream_errors"] += 1
                message = _error_message(await response.aread())
                status = (
                    response.status_code
                    if response.status_code in (400, 413, 422, 429, 503)
                    else 502
                )
                raise BackendError(f"remote LLM: {message}", status=status, code="upstream_error")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise BackendError(f"remote LLM: {_error_message(data.encode())}", status=502)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    text = (
                        (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    ) or ""
                    logprobs = (_chat_logprobs if chat else _completion_logprobs)(choice) or None
                    finish = choice.get("finish_reason") or finish
                    if text or logprobs:
                        yield Delta(text, len(logprobs) if logprobs else 1, logprobs)
        except httpx.HTTPError as exc:
            self._counts["upstream_errors"] += 1
            raise BackendError(
                f"remote LLM at {self.base_url} failed mid-answer: {exc}",
                status=502,
                code="upstream_error",
            ) from exc
        finally:
            # Closing the unread response closes the connection: that is how the upstream learns
            # the client left. Shielded, so a cancellation cannot interrupt it half-way.
            await asyncio.shield(response.aclose())
        yield Delta(
            "",
            0,
            None,
            finish or "stop",
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
        )

    def stats(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._counts.items()}
