"""The asyncio front of the engine: many concurrent streams over one background step loop.

All torch work runs in ONE thread started on the first request, so the event loop never
blocks on a forward pass. Requests and aborts cross into that thread through a
thread-safe queue; each step's outputs come back to the requesting coroutine's own
``asyncio.Queue`` via ``loop.call_soon_threadsafe``. A consumer that stops iterating (or
whose task is cancelled) aborts its request, which frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from llm.engine.config import EngineConfig
from llm.engine.llm_engine import LLMEngine
from llm.engine.outputs import RequestOutput
from llm.engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)

# The longest a hold (hold_admissions) may pause the loop: a release that never comes (a
# bug in the caller) must not stall every other request.
HOLD_TIMEOUT_S = 2.0


class EngineDeadError(RuntimeError):
    """The engine loop stopped (shut down or crashed); the request cannot complete."""


class AsyncEngine:
    """``async for out in engine.generate(ids, params, request_id)`` streams one request."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.model_name: str = engine.model_name
        self.max_model_len: int = engine.max_model_len
        self.tokenizer = engine.tokenizer
        self._inbox: queue.Queue = queue.Queue()
        self._sinks: dict[
            str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]
        ] = {}  # engine thread only
        self._active: set[str] = set()  # request ids with a live generate() (event-loop side)
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stats: dict[str, Any] = engine.stats()
        self._holds = 0  # engine thread only: open hold_admissions()

    @classmethod
    def from_model_path(cls, path: str | Path, config: EngineConfig | None = None) -> AsyncEngine:
        return cls(LLMEngine.from_model_path(path, config))

    # -- text helpers ----------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        """Prompt token ids for a conversation, ending with the assistant's generation prompt."""
        from llm.chat import render_chat

        if self.engine.chat_template is None and hasattr(self.tokenizer, "render_prompt"):
            return list(
                self.tokenizer.render_prompt(messages)
            )  # harmony (gpt-oss): no Jinja template
        if self.engine.chat_template is None:
            raise ValueError(
                f"model {self.model_name!r} has no chat template; send a plain completion"
            )
        text = render_chat(self.engine.chat_template, messages, True, **self.engine.special_tokens)
        return self.tokenizer.encode(text, add_special_tokens=False)

    # -- requests ------------------------------------------------------------------

    async def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """Stream a request's outputs until one has ``finished=True``."""
        self.engine.validate(prompt_token_ids, params)
        if request_id in self._active:
            raise ValueError(f"request id {request_id!r} is already in use")
        if self._stopping.is_set():
            raise EngineDeadError("the engine has been shut down")
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue = asyncio.Queue()
        self._active.add(request_id)
        self._ensure_started()
        self._inbox.put(
            ("add", request_id, list(prompt_token_ids), params, loop, outputs, time.monotonic())
        )
        finished = False
        try:
            while True:
                out = await outputs.get()
                if isinstance(out, BaseException):
                    finished = True
                    raise out
                if out.finished:
                    finished = True
                yield out
                if finished:
                    return
        finally:
            self._active.discard(request_id)
            if not finished:
                self.abort(request_id)

    def hold_admissions(self) -> Callable[[], None]:
        """Pause the loop's steps until the returned function is called (once; later calls
        do nothing), so requests sent meanwhile are admitted together.

        The server's ``n`` choices of one request are separate ``generate`` calls: without
        a hold, the loop thread may step between them (it runs whenever the event loop
        thread yields the GIL), and one choice decodes alone for a step or more before the
        other joins. Then the same seeded request decodes in batches of different shapes
        from one run to the next, whose matmuls may take different kernels and round
        differently, and it does not repeat. Queued together, the scheduler prefills the
        prompt once and forks it (``Scheduler``), the same steps every time. A hold not
        released within ``HOLD_TIMEOUT_S`` is dropped."""
        self._inbox.put(("hold",))
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._inbox.put(("release",))

        return release

    def abort(self, request_id: str) -> None:
        """Stop a request and free its blocks (no-op if it already finished)."""
        self._inbox.put(("abort", request_id))

    def stats(self) -> dict:
        """A snapshot taken by the engine thread after its last step (plus queued arrivals)."""
        stats = dict(self._stats)
        stats["queue_depth"] = stats.get("queue_depth", 0) + self._inbox.qsize()
        return stats

    async def shutdown(self) -> None:
        """Stop the loop thread (then the engine's worker ranks); requests in flight end with an error."""
        self._stopping.set()
        self._inbox.put(("wake",))
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join)
        await asyncio.to_thread(self.engine.close)  # tensor-parallel workers, if any

    # -- the engine thread ---------------------------------------------------------

    def _ensure_started(self) -> None:
        with self._thread_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llm-engine", daemon=True)
                self._thread.start()

    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        sink = self._sinks.get(request_id)
        if sink is None:
            return
        finished = isinstance(item, BaseException) or item.finished
        if finished:
            del self._sinks[request_id]
        loop, outputs = sink
        try:
            loop.call_soon_threadsafe(outputs.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            if not finished:
                self._sinks.pop(request_id, None)
                self.engine.abort(request_id)

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "add":
            _, request_id, prompt, params, loop, outputs, arrival = message
            self._sinks[request_id] = (loop, outputs)
            try:
                self.engine.add_request(request_id, prompt, params, arrival_time=arrival)
            except ValueError as exc:
                self._deliver(request_id, exc)
        elif kind == "hold":
            self._holds += 1
        elif kind == "release":
            self._holds = max(0, self._holds - 1)
        elif kind == "abort":
            out = self.engine.abort(message[1])
            if out is not None:
                self._stats = self.engine.stats()
                self._deliver(message[1], out)

    def _run(self) -> None:
        engine = self.engine
        while not self._stopping.is_set():
            try:
                message = self._inbox.get(timeout=None if not engine.has_unfinished() else 0)
            except queue.Empty:
                message = None
            while message is not None:
                self._handle(message)
                try:
                    message = self._inbox.get_nowait()
                except queue.Empty:
                    message = self._held_message()
            if self._stopping.is_set():
                break
            if engine.has_unfinished():
                try:
                    outputs = engine.step()
                except Exception as exc:  # a crash must reach every waiting caller
                    log.exception("engine step failed")
                    self._fail_all(EngineDeadError(f"engine step failed: {exc}"))
                    continue
                self._stats = (
                    engine.stats()
                )  # before delivery: a caller that saw its output sees it counted
                for out in outputs:
                    self._deliver(out.request_id, out)
            else:
                self._stats = engine.stats()
        self._fail_all(EngineDeadError("the engine has been shut down"))

    def _held_message(self) -> tuple | None:
        """While a hold is open, the next message (waiting for it); else None."""
        if not self._holds or self._stopping.is_set():
            return None
        try:
            return self._inbox.get(timeout=HOLD_TIMEOUT_S)
        except queue.Empty:
            log.warning("an admission hold was not released in %.1f s: dropped", HOLD_TIMEOUT_S)
            self._holds = 0
            return None

    def _fail_all(self, error: BaseException) -> None:
        for request_id in list(self._sinks):
            self.engine.abort(request_id)
            self._deliver(request_id, error)
        self._stats = self.engine.stats()
