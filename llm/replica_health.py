"""Background health checks of LLM replicas: ``GET <url>/models`` with a short timeout.

A replica that stops answering its check is taken out of rotation before a user's request
finds out (and waits a connect timeout); one that was down (it failed a request or a check)
is put back once its check passes again, e.g. after a restart has loaded its model (our
llm_server, vLLM and Ollama answer ``/v1/models`` with 200 only when they can serve).

Runs in a daemon thread with its own blocking HTTP client, so it does not depend on which
event loop the client's requests run in (the gateway's, or a test's ``asyncio.run``).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from llm.replicas import Replica, ReplicaPool


def check_replica(replica: Replica, headers: dict[str, str], timeout_s: float) -> str | None:
    """None when ``replica`` lists its models now, else why not."""
    try:
        response = httpx.get(
            f"{replica.url}/models", headers=headers, timeout=timeout_s, trust_env=False
        )
    except httpx.HTTPError as exc:
        return f"health check failed: {type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return f"health check answered {response.status_code}"
    return None


def check_pool(pool: ReplicaPool, headers: dict[str, str], timeout_s: float) -> None:
    """Check every replica at once and mark each up or down by its answer."""
    with ThreadPoolExecutor(max_workers=len(pool.replicas)) as executor:
        outcomes = list(executor.map(lambda r: check_replica(r, headers, timeout_s), pool.replicas))
    for replica, problem in zip(pool.replicas, outcomes, strict=True):
        if problem is None:
            pool.mark_up(replica)
        else:
            pool.mark_down(replica, problem)


class HealthPoller:
    """Checks ``pool`` every ``interval_s`` in a daemon thread, from ``start`` until ``stop``."""

    def __init__(
        self,
        pool: ReplicaPool,
        headers: dict[str, str],
        interval_s: float = 5.0,
        timeout_s: float = 2.0,
    ):
        self._pool = pool
        self._headers = headers
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start polling (once; later calls do nothing)."""
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="llm-replica-health", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            check_pool(self._pool, self._headers, self.timeout_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1)
