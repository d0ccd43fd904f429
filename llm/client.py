"""OpenAI-style chat client the rest of Enclave uses to reach any LLM server.

It speaks only the public OpenAI HTTP API, so the same code talks to our llm_server,
vLLM or Ollama. Kept small on purpose (httpx, no SDK) so it has no dependency on us.

It may be given several servers of the same model (replicas): ``llm.replicas`` picks one per
request, ``llm.replica_health`` checks them in the background, and a request that got no
answer from one (before any token was streamed) goes to another at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import httpx

from llm.replica_health import HealthPoller, check_pool
from llm.replicas import Replica, ReplicaPool, affinity_key
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
    """Chat completions against OpenAI-compatible servers: one ``base_url`` (ending in ``/v1``)
    or several replicas of the same model (a list of such URLs)."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        api_key: str | None = None,
        timeout: float = 300.0,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        health_interval_s: float = 5.0,
        health_timeout_s: float = 2.0,
    ):
        self.pool = ReplicaPool([base_url] if isinstance(base_url, str) else list(base_url))
        self.base_url = self.pool.replicas[0].url  # the first (or only) server, for messages
        self.model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout, connect=5.0)
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self.health_timeout_s = health_timeout_s
        self._poller = HealthPoller(self.pool, self._headers, health_interval_s, health_timeout_s)

    @property
    def base_urls(self) -> list[str]:
        return [replica.url for replica in self.pool.replicas]

    def _start_polling(self) -> None:
        """Health checks run once there are replicas to choose between (from the first request,
        so a client that is built and never used starts no thread)."""
        if len(self.pool.replicas) > 1:
            self._poller.start()

    def close(self) -> None:
        """Stop the background health checks."""
        self._poller.stop()

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

    async def _call(self, once: Callable[[str], Awaitable[T]], key: str | None) -> T:
        """Run ``once(replica_url)`` through the breaker: on another replica at once when one
        gave no answer and another is up, else retried with back-off (``_after_no_answer``)."""
        self._start_polling()
        tried: list[Replica] = []
        attempt, admitted = 1, 0
        while True:
            if admitted < attempt:  # a fail-over is part of the attempt the breaker admitted
                self._admit()
                admitted = attempt
            replica = self.pool.choose(key, avoid=tried)
            try:
                with self.pool.lease(replica):
                    result = await once(replica.url)
            except _NoAnswer as exc:
                attempt = await self._after_no_answer(replica, exc, tried, attempt)
                continue
            except LLMError:
                self._answered(replica)  # it answered (with an error of ours): it is up
                raise
            self._answered(replica)
            return result

    def _answered(self, replica: Replica) -> None:
        self.breaker.succeeded()
        self.pool.mark_up(replica)

    async def _after_no_answer(
        self, replica: Replica, exc: _NoAnswer, tried: list[Replica], attempt: int
    ) -> int:
        """``replica`` gave no answer: take it out of rotation, then either fail over (another
        replica is up: same attempt, no wait) or count a failure of the service and back off
        (the next attempt's number is returned), raising ``exc`` when no attempt is left."""
        self.pool.mark_down(replica, str(exc))
        tried.append(replica)
        if self.pool.any_up(avoid=tried):
            return attempt
        self.breaker.failed()
        if attempt >= self.retry.attempts or self.breaker.state != "closed":
            raise exc
        await self.retry.sleep(attempt)
        tried.clear()
        return attempt + 1

    @staticmethod
    def _unreachable(url: str, exc: Exception) -> _NoAnswer:
        return _NoAnswer(f"LLM server at {url} unreachable: {type(exc).__name__}: {exc}")

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
        conversation_id: str | None = None,
    ) -> ChatResult:
        """One non-streamed chat completion (retried while the server gives no answer).

        ``response_format``: OpenAI's, e.g. a json_schema the server enforces.
        ``conversation_id``: keeps the conversation on one replica (its prefix cache); without
        it the leading messages are the key.
        """
        payload = self._payload(
            messages, max_tokens, temperature, stop, stream=False, response_format=response_format
        )

        async def once(url: str) -> httpx.Response:
            try:
                async with self._client() as client:
                    response = await client.post(f"{url}/chat/completions", json=payload)
            except httpx.HTTPError as exc:
                raise self._unreachable(url, exc) from exc
            if response.status_code != 200:
                raise self._status_error(response.status_code, response.text[:500])
            return response

        response = await self._call(once, affinity_key(messages, conversation_id))
        body = response.json()
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
        conversation_id: str | None = None,
    ) -> AsyncIterator[str]:
        """Yield the answer's text pieces as the server streams them (SSE).

        Until the first piece arrives a failure is retried like ``chat`` (on another replica
        when one is up); after it, the caller has shown text already, so a failure (the server
        died mid-answer) raises: the answer is never started over, nor shown twice.
        """
        payload = self._payload(messages, max_tokens, temperature, stop, stream=True)
        key = affinity_key(messages, conversation_id)
        self._start_polling()
        tried: list[Replica] = []
        attempt, admitted = 1, 0
        while True:
            if admitted < attempt:
                self._admit()
                admitted = attempt
            replica = self.pool.choose(key, avoid=tried)
            yielded = False
            try:
                with self.pool.lease(replica):
                    async for piece in self._stream_once(replica.url, payload):
                        yielded = True
                        yield piece
            except _NoAnswer as exc:
                if yielded:
                    self.pool.mark_down(replica, str(exc))
                    self.breaker.failed()
                    raise LLMError(f"LLM server failed mid-stream: {exc}") from exc
                attempt = await self._after_no_answer(replica, exc, tried, attempt)
                continue
            except LLMError:
                self._answered(replica)
                raise
            self._answered(replica)
            return

    async def _stream_once(self, url: str, payload: dict) -> AsyncIterator[str]:
        try:
            async with self._client() as client:
                async with client.stream(
                    "POST", f"{url}/chat/completions", json=payload
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
            raise _NoAnswer(
                f"LLM server at {url} closed the stream before it ended ([DONE] missing)"
            )
        except httpx.HTTPError as exc:
            raise self._unreachable(url, exc) from exc

    async def list_models(self, timeout: float = 3.0) -> list[dict]:
        """The ``data`` of ``GET /models`` of a live replica: one dict per served model, as the
        server wrote it (vLLM and our server add ``max_model_len``; Ollama and others may not)."""
        url = self.pool.choose().url
        try:
            async with self._client(httpx.Timeout(timeout)) as client:
                response = await client.get(f"{url}/models")
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM server at {url} unreachable: {exc}") from exc
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

    async def check_replicas(self) -> list[dict]:
        """Check every server now (``GET /models``), update which are up, and describe them."""
        await asyncio.to_thread(check_pool, self.pool, self._headers, self.health_timeout_s)
        return self.pool.snapshot()

    async def health(self) -> bool:
        """True when at least one server lists its models (our server, vLLM and Ollama do)."""
        return any(replica["up"] for replica in await self.check_replicas())
