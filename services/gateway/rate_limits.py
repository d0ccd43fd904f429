"""In-process rate limits: login failures with lockout, and request budgets per user and address.

Kept in memory on purpose: one gateway process serves a company of hundreds, and a
restart forgetting a lockout is acceptable (the lockout is minutes long). Several gateway
processes would each keep their own counts, which only makes the limit per process.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from services.gateway.errors import TooManyRequests


class SlidingWindow:
    """At most ``limit`` events per key in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window_s:
            events.popleft()
        return events

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may act again; 0 when it may act now (a limit of 0: no limit)."""
        if self.limit <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            events = self._recent(key, now)
            if len(events) < self.limit:
                return 0.0
            return events[len(events) - self.limit] + self.window_s - now

    def record(self, key: str) -> None:
        with self._lock:
            now = self._clock()
            self._recent(key, now).append(now)
            if len(self._events) > 100_000:  # bounded memory under a flood of random keys
                self._events = {k: v for k, v in self._events.items() if v}

    def hit(self, key: str, what: str) -> None:
        """Record one event for ``key``, or raise 429 when its budget is spent."""
        wait = self.retry_after(key)
        if wait > 0:
            raise TooManyRequests(f"too many {what}; try again in {math.ceil(wait)} s", wait)
        self.record(key)

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)


class LoginThrottle:
    """Lock a username, and separately an address, after too many failed logins.

    While locked, even the right password is refused with 429 (Retry-After), so guessing
    cannot go on in the background; a success clears the username's count.
    """

    def __init__(self, max_failures: int, window_s: float, per_address_failures: int):
        self._users = SlidingWindow(max_failures, window_s)
        self._addresses = SlidingWindow(per_address_failures, window_s)

    def check(self, username: str, address: str) -> None:
        wait = max(
            self._users.retry_after(_user_key(username)), self._addresses.retry_after(address)
        )
        if wait > 0:
            raise TooManyRequests(f"too many failed logins; try again in {math.ceil(wait)} s", wait)

    def failed(self, username: str, address: str) -> None:
        self._users.record(_user_key(username))
        self._addresses.record(address)

    def succeeded(self, username: str) -> None:
        self._users.clear(_user_key(username))


def _user_key(username: str) -> str:
    return username.strip().lower()


class RequestBudget:
    """Requests per minute for one kind of work, per user and (more loosely) per address.

    The address budget is ``address_factor`` times the user's: many people share an
    office's address, one script does not get more by rotating accounts.
    """

    def __init__(self, per_minute: int, what: str, address_factor: int = 10):
        self._users = SlidingWindow(per_minute, 60.0)
        self._addresses = SlidingWindow(per_minute * address_factor, 60.0)
        self._what = what

    def hit(self, user_id: str, address: str) -> None:
        self._users.hit(user_id, self._what)
        self._addresses.hit(address, self._what)
