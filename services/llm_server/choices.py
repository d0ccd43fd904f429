"""Run every choice of a request concurrently and hand back their deltas in arrival order.

Each choice is one ``backend.generate`` iterator pumped by its own task into a shared queue.
``cancel()`` is synchronous on purpose: it is called from ``finally`` blocks of cancelled
tasks (client gone), where awaiting is not possible; cancelling a pump task raises inside
the backend's iterator, which is how a backend learns that its generation is abandoned.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from .backends.base import Backend, Delta
from .prepare import Job

_DONE = object()


class ChoiceRun:
    """The running choices of one request."""

    def __init__(self, backend: Backend, jobs: list[Job], request_id: str):
        self._backend = backend
        self._jobs = jobs
        self._request_id = request_id
        self._queue: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._pending = len(jobs)
        self._cancelled = False

    def start(self) -> None:
        # A backend that can (the engine) admits a request's choices together: the
        # tasks' first steps, which send them, run before the release queued after them.
        hold = getattr(self._backend, "hold_admissions", None)
        release = hold() if hold is not None and len(self._jobs) > 1 else None
        try:
            self._tasks = [asyncio.create_task(self._pump(job)) for job in self._jobs]
        finally:
            if release is not None:
                asyncio.get_running_loop().call_soon(release)

    async def _pump(self, job: Job) -> None:
        request_id = f"{self._request_id}-{job.index}"
        try:
            async with aclosing(
                self._backend.generate(job.prompt, job.params, request_id)
            ) as deltas:
                async for delta in deltas:
                    self._queue.put_nowait((job.index, delta))
                    if delta.finish_reason is not None:
                        break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._queue.put_nowait((job.index, exc))
        finally:
            self._queue.put_nowait((job.index, _DONE))

    async def next(self) -> tuple[int, Delta] | None:
        """The next (choice index, delta); None when every choice is done; raises a choice's error."""
        while self._pending:
            index, item = await self._queue.get()
            if item is _DONE:
                self._pending -= 1
                continue
            if isinstance(item, BaseException):
                self.cancel()
                raise item
            return index, item
        return None

    def cancel(self) -> None:
        """Stop every choice still generating. Only the first call acts: cancelling a task again
        would interrupt the cleanup the first cancellation started (closing an upstream connection)."""
        if self._cancelled:
            return
        self._cancelled = True
        for task in self._tasks:
            if not task.done():
                task.cancel()
