"""Retries and the circuit breaker of llm.client, against a real loopback HTTP server."""

from __future__ import annotations

import asyncio
import socket

import pytest

from llm.client import LLMClient, LLMError
from llm.resilience import CircuitBreaker, CircuitOpen, RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_the_threshold_and_lets_one_trial_through_after_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=clock)
    breaker.before_call()
    breaker.failed()
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.failed()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen, match="failed 2 times in a row"):
        breaker.before_call()
    clock.now = 10.5
    breaker.before_call()  # the half-open trial
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # only one at a time
    breaker.failed()
    assert breaker.state == "open"  # a failed trial re-opens for another cool-down
    clock.now = 21
    breaker.before_call()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.failures == 0


def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(attempts=5, base_delay_s=1.0, max_delay_s=3.0)
    assert 0.5 <= policy.delay(1) <= 1.0
    assert 1.0 <= policy.delay(2) <= 2.0
    assert 1.5 <= policy.delay(5) <= 3.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on exit: connections are refused


def test_unreachable_server_is_retried_then_the_circuit_fails_fast():
    clock = FakeClock()
    client = LLMClient(
        f"http://127.0.0.1:{_closed_port()}/v1",
        "m",
        retry=RetryPolicy(attempts=3, base_delay_s=0.01),
        breaker=CircuitBreaker(failure_threshold=3, cooldown_s=30, clock=clock),
    )
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(LLMError, match="unreachable"):
        asyncio.run(client.chat(messages))
    assert client.breaker.failures == 3 and client.breaker.state == "open"
    with pytest.raises(LLMError, match="not asking it again"):
        asyncio.run(client.chat(messages))

    async def drain() -> list[str]:
        return [piece async for piece in client.stream_chat(messages)]

    with pytest.raises(LLMError, match="not asking it again"):
        asyncio.run(drain())
