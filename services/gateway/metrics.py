"""Prometheus metrics of one gateway app: requests, latency, chat latency, jobs by state,
and the LLM replicas (up or not, requests in flight).

Each app owns its registry (no global default registry), so test apps do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from llm.replicas import ReplicaPool
from services.db import JOB_STATES, Job


class _JobsCollector:
    """Reads job counts from SQL at scrape time (the worker, another process, changes them)."""

    def __init__(self, sessions: sessionmaker):
        self._sessions = sessions

    def collect(self):
        family = GaugeMetricFamily(
            "enclave_jobs", "Jobs by kind and state", labels=["kind", "state"]
        )
        counts: dict[tuple[str, str], int] = {}
        try:
            with self._sessions() as session:
                rows = session.execute(
                    select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
                )
                counts = {(kind, state): n for kind, state, n in rows}
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB hiccups
            return
        for kind in ("ingest", "delete"):
            for state in JOB_STATES:
                family.add_metric([kind, state], counts.get((kind, state), 0))
        yield family


class _ReplicasCollector:
    """Reads the LLM client's view of its replicas at scrape time."""

    def __init__(self, pool: ReplicaPool):
        self._pool = pool

    def collect(self):
        up = GaugeMetricFamily(
            "enclave_llm_replica_up", "1 while the LLM replica takes requests", labels=["replica"]
        )
        outstanding = GaugeMetricFamily(
            "enclave_llm_replica_outstanding", "LLM requests in flight", labels=["replica"]
        )
        requests = CounterMetricFamily(
            "enclave_llm_replica_requests", "LLM requests finished, any outcome", labels=["replica"]
        )
        failures = CounterMetricFamily(
            "enclave_llm_replica_failures",
            "Times the LLM replica was taken out of rotation",
            labels=["replica"],
        )
        for replica in self._pool.snapshot():
            label = [replica["url"]]
            up.add_metric(label, 1 if replica["up"] else 0)
            outstanding.add_metric(label, replica["outstanding"])
            requests.add_metric(label, replica["requests"])
            failures.add_metric(label, replica["failures"])
        yield from (up, outstanding, requests, failures)


class GatewayMetrics:
    def __init__(self, sessions: sessionmaker, llm_replicas: ReplicaPool | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "enclave_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "enclave_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )
        self.chat_seconds = Histogram(
            "enclave_chat_seconds",
            "Time to a full chat answer",
            ["mode"],
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.registry.register(_JobsCollector(sessions))
        if llm_replicas is not None:
            self.registry.register(_ReplicasCollector(llm_replicas))

    def render(self) -> Response:
        return Response(
            generate_latest(self.registry), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def middleware(self, request: Request, call_next: Callable) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", None) or (
                "static" if not request.url.path.startswith("/api") else "unmatched"
            )
            self.requests.labels(request.method, path, str(status)).inc()
            self.latency.labels(request.method, path).observe(time.perf_counter() - started)
