"""Which LLM replica serves the next request: least outstanding, sticky per conversation.

Several OpenAI-compatible servers (replicas of the same model) can stand behind one client.
This module only decides and keeps score; it makes no HTTP call (the client and the health
poller report what they saw through ``mark_down`` / ``mark_up``).

- Load: a new conversation goes to the live replica with the fewest requests in flight, so
  a replica busy with long answers gets fewer new ones.
- Affinity: a conversation stays on the replica that served it before, which holds its
  prefix in its KV cache (recomputing a long prompt elsewhere costs a full prefill), for as
  long as that replica is up. When it goes down the conversation moves, and stays where it
  moved to (that replica now holds the cache).
- Health: a replica marked down gets no requests while any replica is up; it comes back
  when a health check or a request succeeds on it. When every replica is down, requests
  still go out (to the one with the fewest in flight): health may lag a recovery, and the
  client's retries and circuit breaker then decide, as with a single server.

Thread-safe: the health poller runs in its own thread.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

AFFINITY_MESSAGES = 2  # system prompt + first user turn: what a conversation's prefix starts with
AFFINITY_CAPACITY = 4096  # conversations remembered (least recently used forgotten first)


def affinity_key(messages: list[dict], conversation_id: str | None = None) -> str:
    """The key that keeps a conversation on one replica: its id when the caller has one, else
    a hash of its leading messages (the prefix a later turn shares)."""
    if conversation_id:
        return f"conversation:{conversation_id}"
    leading = [
        [m.get("role"), m.get("content")]
        for m in messages[:AFFINITY_MESSAGES]
        if isinstance(m, dict)
    ]
    digest = hashlib.sha256(json.dumps(leading, default=str).encode()).hexdigest()
    return f"prefix:{digest[:32]}"


@dataclass(eq=False)
class Replica:
    """One server and what the client knows of it (``url`` ends in ``/v1``)."""

    url: str
    up: bool = True
    outstanding: int = 0
    requests: int = 0  # finished, by any outcome
    failures: int = 0  # times it was marked down
    error: str | None = None  # why it is down
    changed_at: float = 0.0  # when ``up`` last changed (monotonic clock)

    def describe(self) -> dict:
        return {
            "url": self.url,
            "up": self.up,
            "outstanding": self.outstanding,
            "requests": self.requests,
            "failures": self.failures,
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class ReplicaPool:
    """The replicas behind one client and the choice among them."""

    urls: Iterable[str]
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    capacity: int = AFFINITY_CAPACITY

    def __post_init__(self) -> None:
        self.replicas = [Replica(url.rstrip("/")) for url in self.urls]
        if not self.replicas:
            raise ValueError("an LLM client needs at least one server URL")
        if len({r.url for r in self.replicas}) != len(self.replicas):
            raise ValueError(f"LLM server URLs repeat: {[r.url for r in self.replicas]}")
        self._affinity: OrderedDict[str, Replica] = OrderedDict()
        self._lock = threading.Lock()
        self._turn = 0  # rotates ties so equal replicas share the load

    def choose(self, key: str | None = None, avoid: Iterable[Replica] = ()) -> Replica:
        """The replica for the next request of conversation ``key``, not one of ``avoid`` (those
        that just failed it) unless nothing else is left."""
        with self._lock:
            avoided = set(avoid)
            fresh = [r for r in self.replicas if r not in avoided]
            live = [r for r in fresh if r.up]
            pinned = self._affinity.get(key) if key else None
            if pinned is not None and pinned in live:
                self._affinity.move_to_end(key)  # type: ignore[arg-type]
                return pinned
            chosen = self._least_outstanding(live or fresh or self.replicas)
            if key and chosen.up:
                self._affinity[key] = chosen
                self._affinity.move_to_end(key)
                while len(self._affinity) > self.capacity:
                    self._affinity.popitem(last=False)
            return chosen

    def _least_outstanding(self, candidates: list[Replica]) -> Replica:
        self._turn += 1
        n = len(candidates)
        rotated = [candidates[(i + self._turn) % n] for i in range(n)]
        return min(rotated, key=lambda r: r.outstanding)

    @contextmanager
    def lease(self, replica: Replica) -> Iterator[Replica]:
        """Count a request in flight on ``replica`` for the duration of the ``with``."""
        with self._lock:
            replica.outstanding += 1
        try:
            yield replica
        finally:
            with self._lock:
                replica.outstanding -= 1
                replica.requests += 1

    def mark_down(self, replica: Replica, reason: str) -> None:
        """It failed a request or a health check: no new requests while another is up."""
        with self._lock:
            if replica.up:
                replica.failures += 1
                replica.changed_at = self.clock()
            replica.up, replica.error = False, reason

    def mark_up(self, replica: Replica) -> None:
        """It answered: requests may go to it again."""
        with self._lock:
            if not replica.up:
                replica.changed_at = self.clock()
            replica.up, replica.error = True, None

    def any_up(self, avoid: Iterable[Replica] = ()) -> bool:
        avoided = set(avoid)
        with self._lock:
            return any(r.up and r not in avoided for r in self.replicas)

    def snapshot(self) -> list[dict]:
        """Every replica's state, for readiness reports and metrics."""
        with self._lock:
            return [r.describe() for r in self.replicas]
