"""Queue accounting and the metrics exposition, without a model."""

from __future__ import annotations

import pytest

from services.llm_server.admission import RequestTracker
from services.llm_server.errors import QueueFull
from services.llm_server.metrics import ServerMetrics


def test_requests_beyond_the_queue_limit_are_refused_until_one_starts():
    tracker = RequestTracker(max_queue=2)
    first, second = tracker.admit(), tracker.admit()
    with pytest.raises(QueueFull) as caught:
        tracker.admit()
    assert caught.value.status == 503
    assert first.started() is True and first.started() is False  # only the first token counts
    assert (tracker.waiting, tracker.running) == (1, 1)
    third = tracker.admit()
    for ticket in (first, second, third, third):
        ticket.finish()
    assert (tracker.waiting, tracker.running) == (0, 0)


def test_backend_stats_become_named_gauges():
    tracker = RequestTracker(max_queue=4)
    stats = {
        "kv_blocks_used": 3,
        "kv_blocks_free": 61,
        "prefix_cache_hit_rate": 0.5,
        "weird key": 2,
        "label": "not a number",
    }
    text = ServerMetrics(tracker, lambda: stats).render().decode()
    assert "enclave_llm_kv_blocks_used 3.0" in text
    assert "enclave_llm_kv_blocks_free 61.0" in text
    assert "enclave_llm_prefix_cache_hit_rate 0.5" in text
    assert "enclave_llm_backend_weird_key 2.0" in text
    assert "label" not in text
    assert "enclave_llm_queue_depth 0.0" in text


def test_a_failing_backend_does_not_break_the_scrape():
    def broken() -> dict:
        raise RuntimeError("not ready")

    text = ServerMetrics(RequestTracker(1), broken).render().decode()
    assert "enclave_llm_requests_running 0.0" in text
