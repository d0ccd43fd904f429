"""Retries with back-off and a circuit breaker for calls to an LLM endpoint.

An LLM server restarts (a new model, an OOM, a deploy) take seconds to minutes. Short
blips are absorbed by retrying a request that failed before any answer came back
(connection refused, 502/503/504) with exponential back-off. A longer outage opens the
circuit: after ``failure_threshold`` failures in a row, requests fail at once with a clear
message for ``cooldown_s`` instead of each waiting out its own retries and piling up; then
one request is let through (half-open) and its success closes the circuit again.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

RETRYABLE_STATUS = frozenset({502, 503, 504})


class CircuitOpen(RuntimeError):
    """The endpoint failed repeatedly; requests fail fast until the cool-down ends."""


@dataclass
class RetryPolicy:
    """How often and how patiently to retry a request that got no answer."""

    attempts: int = 3
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0

    def delay(self, attempt: int) -> float:
        """Back-off before retry number ``attempt`` (1-based), with jitter."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return ceiling * (0.5 + random.random() / 2)

    async def sleep(self, attempt: int) -> None:
        await asyncio.sleep(self.delay(attempt))


@dataclass
class CircuitBreaker:
    """Counts consecutive failures; open (fail fast) for ``cooldown_s`` past the threshold."""

    failure_threshold: int = 5
    cooldown_s: float = 15.0
    clock: object = field(default=time.monotonic, repr=False)
    failures: int = 0
    opened_at: float | None = None
    _trial_in_flight: bool = False

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator]

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (cool-down over, one trial allowed)."""
        if self.opened_at is None:
            return "closed"
        return "open" if self._now() - self.opened_at < self.cooldown_s else "half_open"

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go out now."""
        state = self.state
        if state == "open" or (state == "half_open" and self._trial_in_flight):
            remaining = max(0.0, self.cooldown_s - (self._now() - (self.opened_at or 0.0)))
            raise CircuitOpen(
                f"the language model failed {self.failures} times in a row; not asking it "
                f"again for {remaining:.0f} s"
            )
        if state == "half_open":
            self._trial_in_flight = True

    def succeeded(self) -> None:
        self.failures, self.opened_at, self._trial_in_flight = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        self._trial_in_flight = False
        if self.failures >= self.failure_threshold or self.opened_at is not None:
            self.opened_at = self._now()
