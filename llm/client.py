"""OpenAI-style chat client the rest of Enclave uses to reach any LLM server.

It speaks only the public OpenAI HTTP API, so the same code talks to our llm_server,
vLLM or Ollama. Kept small on purpose (httpx, no SDK) so it has no dependency on us.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from llm.resilience import RETRYABLE_STATUS, CircuitBreaker, CircuitOpen, RetryPolicy

T = TypeVar("T")


class LLMError(RuntimeError):
    """The LLM endpoint could not be reached or answered with an error (``status``: its HTTP status)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _NoAnswer(LLMError):
    """The request got no answer (refused, reset, 502/503/504): worth retrying."""


@dataclass
class ChatResult:
    """A finished chat completion."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class LLMClient:
    """Chat completions against an OpenAI-compatible ``base_url`` (ending in ``/v1``)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 300.0,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout, connect=5.0)
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()

    def _client(self, timeout: httpx.Timeout | None = None) -> httpx.AsyncClient:
        """An HTTP client that ignores HTTP(S)_PROXY and friends (``trust_env=False``).

        Prompts carry document text; a proxy set in the environment (corporate hosts,
        Docker) must never receive them. The LLM server is addressed directly.
        """
        return httpx.AsyncClient(
            timeout=timeout or self._timeout, headers=self._headers, trust_env=False
        )

    def _admit(self) -> None:
        try:
            self.breaker.before_call()
        except CircuitOpen as exc:
            raise LLMError(str(exc)) from exc

    async def _call(self, once: Callable[[], Awaitable[T]]) -> T:
        """Run ``once`` through the breaker, retrying while no answer came back."""
        for attempt in range(1, self.retry.attempts + 1):
            self._admit()
            try:
                result = await once()
            except _NoAnswer:
                self.breaker.failed()
                if attempt == self.retry.attempts or self.breaker.state != "closed":
                    raise
                await self.retry.sleep(attempt)
                continue
            except LLMError:
                self.breaker.succeeded()  # it answered (with an error of ours): it is up
                raise
            self.breaker.succeeded()
            return result
        raise AssertionError("unreachable")

    def _unreachable(self, exc: Exception) -> _NoAnswer:
        return _NoAnswer(f"LLM server at {self.base_url} unreachable: {exc}")

    @staticmethod
    def _status_error(status: int, body: object) -> LLMError:
        kind = _NoAnswer if status in RETRYABLE_STATUS else LLMError
        return kind(f"LLM server answered {status}: {body!r:.500}", status=status)

    def _payload(
        self,
        messages: list[dict],
        max_tokens: int,
        temperature: float,
        stop: list[str] | None,
        stream: bool,
        response_format: dict | None = None,
    ) -> dict:
        payload: dict = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
        }
        if stop:
            payload["stop"] = stop
        if response_format:
            payload["response_format"] = response_format
        return payload

    async def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        response_format: dict | None = None,
    ) -> ChatResult:
        """One non-streamed chat completion (retried while the server gives no answer).

        ``response_format``: OpenAI's, e.g. a json_schema the server enforces.
        """
        payload = self._payload(
            messages, max_tokens, temperature, stop, stream=False, response_format=response_format
        )

        async def once() -> httpx.Response:
            try:
                async with self._client() as client:
                    response = await client.post(f"{self.base_url}/chat/completions", json=payload)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            if response.status_code != 200:
                raise self._status_error(response.status_code, response.text[:500])
            return response

        body = (await self._call(once)).json()
        choice = body["choices"][0]
        usage = body.get("usage") or {}
        return ChatResult(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
        )

    async def stream_chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> AsyncIterator[str]:
        """Yield the answer's text pieces as the server streams them (SSE).

        Until the first piece arrives a failure is retried like ``chat``; after it, the
        caller has shown text already, so a failure (the server died mid-answer) raises.
        """
        payload = self._payload(messages, max_tokens, temperature, stop, stream=True)
        for attempt in range(1, self.retry.attempts + 1):
            self._admit()
            yielded = False
            try:
                async for piece in self._stream_once(payload):
                    yielded = True
                    yield piece
            except _NoAnswer as exc:
                self.breaker.failed()
                if yielded:
                    raise LLMError(f"LLM server failed mid-stream: {exc}") from exc
                if attempt == self.retry.attempts or self.breaker.state != "closed":
                    raise
                await self.retry.sleep(attempt)
                continue
            except LLMError:
                self.breaker.succeeded()
                raise
            self.breaker.succeeded()
            return

    async def _stream_once(self, payload: dict) -> AsyncIterator[str]:
        try:
            async with self._client() as client:
                async with client.stream(
                    "POST", f"{self.base_url}/chat/completions", json=payload
                ) as response:
                    if response.status_code != 200:
                        body = await response.aread()
                        raise self._status_error(response.status_code, body[:500])
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            return
                        chunk = json.loads(data)
                        if "error" in chunk:  # the server failed mid-stream (OpenAI's error shape)
                            raise LLMError(
                                f"LLM server failed mid-stream: {chunk['error'].get('message')}"
                            )
                        delta = chunk["choices"][0].get("delta", {}) if chunk.get("choices") else {}
                        if delta.get("content"):
                            yield delta["content"]
            raise _NoAnswer("LLM server closed the stream before it ended ([DONE] missing)")
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    async def list_models(self, timeout: float = 3.0) -> list[dict]:
        """The ``data`` of ``GET /models``: one dict per served model, as the server wrote it
        (vLLM and our server add ``max_model_len``; Ollama and others may not)."""
        try:
            async with self._client(httpx.Timeout(timeout)) as client:
                response = await client.get(f"{self.base_url}/models")
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM server at {self.base_url} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise LLMError(
                f"LLM server answered {response.status_code}: {response.text[:500]}",
                status=response.status_code,
            )
        try:
            models = response.json().get("data")
        except (ValueError, AttributeError) as exc:
            raise LLMError(f"LLM server's /models is not an OpenAI model list: {exc}") from exc
        return [model for model in models or [] if isinstance(model, dict)]

    async def health(self) -> bool:
        """True when the endpoint lists models (works on our server, vLLM and Ollama)."""
        try:
            await self.list_models()
        except LLMError:
            return False
        return True
