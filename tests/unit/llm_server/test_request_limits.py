"""Per-request limits of the LLM server (issue 12): body cap, prompts x n admission, max_tokens default.

A stub backend records what it is asked to generate, so no model loads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi.testclient import TestClient

from services.llm_server.admission import RequestTracker
from services.llm_server.app import create_app
from services.llm_server.backends.base import Delta, GenerationParams
from services.llm_server.errors import QueueFull
from services.settings import Settings


class StubBackend:
    kind = "stub"
    model_name = "stub"
    max_model_len = 4096
    max_top_logprobs = -1
    supports_response_format = False

    def __init__(self) -> None:
        self.params: list[GenerationParams] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def count_prompt_tokens(self, prompt) -> int:
        return 10

    async def generate(
        self, prompt, params: GenerationParams, request_id: str
    ) -> AsyncIterator[Delta]:
        self.params.append(params)
        await asyncio.sleep(0)
        yield Delta(text="ok", num_tokens=1, finish_reason="stop")

    def stats(self) -> dict[str, float]:
        return {}


def _client(backend: StubBackend, **overrides) -> TestClient:
    settings = Settings(llm_max_model_len=4096, llm_backend="hf", **overrides)
    return TestClient(create_app(settings, backend=backend))


def test_a_chat_request_without_max_tokens_gets_the_bounded_default():
    backend = StubBackend()
    with _client(backend, llm_default_max_tokens=128) as client:
        response = client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert response.status_code == 200, response.text
        explicit = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000},
        )
        assert explicit.status_code == 200
    assert [p.max_tokens for p in backend.params] == [128, 2000]


def test_bodies_over_the_cap_are_413_before_parsing():
    backend = StubBackend()
    with _client(backend, llm_max_body_bytes=10_000) as client:
        huge = {"messages": [{"role": "user", "content": "x" * 20_000}]}
        response = client.post("/v1/chat/completions", json=huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert backend.params == []


def test_prompts_times_n_take_that_many_places_in_the_queue():
    tracker = RequestTracker(max_queue=8)
    big = tracker.admit(6)
    with pytest.raises(QueueFull):
        tracker.admit(3)
    small = tracker.admit(2)
    assert tracker.waiting == 8
    big.started()
    assert (tracker.waiting, tracker.running) == (2, 6)
    big.finish()
    small.finish()
    assert (tracker.waiting, tracker.running) == (0, 0)


def test_a_completion_of_many_prompts_times_n_is_refused_when_the_queue_cannot_hold_it():
    backend = StubBackend()
    with _client(backend, llm_max_queue=8) as client:
        response = client.post(
            "/v1/completions", json={"prompt": ["a", "b", "c"], "n": 4, "max_tokens": 4}
        )
        assert response.status_code == 503
        fits = client.post("/v1/completions", json={"prompt": ["a", "b"], "n": 4, "max_tokens": 4})
        assert fits.status_code == 200, fits.text
    assert len(backend.params) == 8
