"""Prometheus metrics of one LLM server app, in a registry of its own (no process globals).

Names (all prefixed ``enclave_llm_``):

- ``requests_total{endpoint,status}``: HTTP requests to /v1/* by status code
- ``queue_depth``, ``requests_running``: requests waiting for their first token / generating
- ``prompt_tokens_total``, ``generation_tokens_total``: tokens read and produced
- ``finished_choices_total{finish_reason}``: choices ended by stop, length, abort, error
- ``time_to_first_token_seconds``, ``inter_token_latency_seconds``, ``request_duration_seconds``: histograms
- from the backend's ``stats()`` when it reports them: ``kv_blocks_used``, ``kv_blocks_free``,
  ``prefix_cache_hit_rate``, and every other number as ``backend_<name>`` (the engine's
  ``backend_weight_bytes``, ``backend_kv_blocks_total``, ...)
- ``engine_info{device,kernels,dtype,kv_dtype,tensor_parallel}`` = 1, from the backend's ``describe()`` when it has one
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from .admission import RequestTracker

PREFIX = "enclave_llm_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAMED_BACKEND_STATS = {
    "kv_blocks_used": "KV cache blocks in use.",
    "kv_blocks_free": "KV cache blocks free.",
    "prefix_cache_hit_rate": "Share of prompt tokens served from the prefix cache.",
}
_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class _LiveCollector(Collector):
    """Gauges read at scrape time: the tracker's counts and the backend's own stats."""

    def __init__(
        self,
        tracker: RequestTracker,
        backend_stats: Callable[[], dict[str, float]],
        backend_info: Callable[[], dict[str, object]] | None = None,
    ):
        self._tracker = tracker
        self._backend_stats = backend_stats
        self._backend_info = backend_info

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        yield GaugeMetricFamily(
            PREFIX + "queue_depth",
            "Requests waiting for their first token.",
            value=self._tracker.waiting,
        )
        yield GaugeMetricFamily(
            PREFIX + "requests_running", "Requests generating tokens.", value=self._tracker.running
        )
        try:
            stats = self._backend_stats()
        except Exception:  # a scrape must not fail because a backend is not ready
            stats = {}
        for key, value in sorted(stats.items()):
            if not isinstance(value, int | float):
                continue
            if key in _NAMED_BACKEND_STATS:
                yield GaugeMetricFamily(PREFIX + key, _NAMED_BACKEND_STATS[key], value=float(value))
            else:
                name = PREFIX + "backend_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)
                yield GaugeMetricFamily(name, f"Backend statistic '{key}'.", value=float(value))
        try:
            info = self._backend_info() if self._backend_info is not None else {}
        except Exception:  # as above: a scrape never fails on a backend
            info = {}
        labels: dict[str, str] = {
            k: str(info[k])
            for k in ("device", "kernels", "dtype", "kv_dtype", "tensor_parallel")
            if k in info
        }
        if labels:
            yield InfoMetricFamily(
                PREFIX + "engine",
                "Where the engine runs: device, kernel backend, dtype, KV cache dtype, tensor-parallel size.",
                labels,
            )


class ServerMetrics:
    """The app's counters and histograms; ``render()`` gives the /metrics body."""

    def __init__(
        self,
        tracker: RequestTracker,
        backend_stats: Callable[[], dict[str, float]],
        backend_info: Callable[[], dict[str, object]] | None = None,
    ):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            PREFIX + "requests",
            "HTTP requests to /v1/* by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(PREFIX + "prompt_tokens", "Prompt tokens read.", registry=r)
        self.generation_tokens = Counter(
            PREFIX + "generation_tokens", "Tokens generated.", registry=r
        )
        self.finished = Counter(
            PREFIX + "finished_choices",
            "Choices finished, by reason.",
            ["finish_reason"],
            registry=r,
        )
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Admission to first token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            PREFIX + "inter_token_latency_seconds",
            "Time between tokens of one choice.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Admission to last token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_LiveCollector(tracker, backend_stats, backend_info))

    def render(self) -> bytes:
        return generate_latest(self.registry)
