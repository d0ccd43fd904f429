"""How many requests wait and run in this server, and the 503 when too many wait.

A request waits from admission until its first token arrives (queued behind others, or in
prefill) and runs until its last. Counting here, not in the backend, gives the same
meaning to ``llm_max_queue`` whatever the backend is.
"""

from __future__ import annotations

import time

from .errors import QueueFull


class RequestTracker:
    """Counts of waiting and running requests; admits or refuses new ones."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.waiting = 0
        self.running = 0

    def admit(self, sequences: int = 1) -> Ticket:
        """A ticket for a request of ``sequences`` generations (prompts x ``n``), or QueueFull.

        A request is counted as the sequences it will run: one HTTP call with 8 prompts
        and ``n=4`` costs the engine 32 sequences and takes 32 places in the queue. A
        single request larger than the whole queue is refused too (it could never fit).
        """
        weight = max(1, sequences)
        if self.waiting + weight > self.max_queue:
            raise QueueFull(self.max_queue)
        self.waiting += weight
        return Ticket(self, weight)


class Ticket:
    """One admitted request's place in the counts; every transition is idempotent."""

    def __init__(self, tracker: RequestTracker, weight: int = 1):
        self._tracker = tracker
        self.weight = weight
        self.state = "waiting"
        self.admitted_at = time.monotonic()

    def started(self) -> bool:
        """Mark the first token; True the first time (so the caller records time to first token)."""
        if self.state != "waiting":
            return False
        self._tracker.waiting -= self.weight
        self._tracker.running += self.weight
        self.state = "running"
        return True

    def finish(self) -> None:
        if self.state == "waiting":
            self._tracker.waiting -= self.weight
        elif self.state == "running":
            self._tracker.running -= self.weight
        self.state = "done"
