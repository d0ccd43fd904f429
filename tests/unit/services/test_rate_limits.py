"""Sliding-window limits: lockout per user and per address, budgets per minute."""

from __future__ import annotations

import pytest

from services.gateway.errors import TooManyRequests
from services.gateway.rate_limits import LoginThrottle, RequestBudget, SlidingWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_refuses_past_the_limit_and_says_when_to_retry():
    clock = Clock()
    window = SlidingWindow(2, 60.0, clock)
    window.hit("k", "calls")
    clock.now += 10
    window.hit("k", "calls")
    with pytest.raises(TooManyRequests) as caught:
        window.hit("k", "calls")
    assert caught.value.retry_after == pytest.approx(50.0)
    clock.now += 51
    window.hit("k", "calls")  # the first call has left the window


def test_login_lockout_is_per_username_and_per_address():
    throttle = LoginThrottle(max_failures=2, window_s=60, per_address_failures=3)
    for _ in range(2):
        throttle.failed("Alice", "10.0.0.1")
    with pytest.raises(TooManyRequests):
        throttle.check("alice", "10.0.0.9")  # the name is locked from any address
    throttle.check("bob", "10.0.0.1")  # the address has one failure left
    throttle.failed("bob", "10.0.0.1")
    with pytest.raises(TooManyRequests):
        throttle.check("carol", "10.0.0.1")  # now the address is locked for every name
    throttle.succeeded("Alice")
    throttle.check("alice", "10.0.0.2")


def test_request_budget_counts_users_and_addresses():
    budget = RequestBudget(2, "chat requests", address_factor=2)
    budget.hit("u1", "a")
    budget.hit("u1", "a")
    with pytest.raises(TooManyRequests):
        budget.hit("u1", "b")
    budget.hit("u2", "a")
    budget.hit("u3", "a")  # fourth from address a: the address budget is 2 x 2
    with pytest.raises(TooManyRequests):
        budget.hit("u4", "a")
