"""Run a prepared request on the backend and answer it: one JSON body, or an SSE stream.

Owns the request's life: admission (503 when the queue is full), its choices, metrics, and
cancellation when the client goes away, while waiting, generating or streaming.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .admission import RequestTracker, Ticket
from .backends.base import Backend, BackendError, Delta
from .choices import ChoiceRun
from .errors import UpstreamError, error_body
from .formatting import ChoiceResult, chunk, full_response, sse, usage_chunk
from .metrics import ServerMetrics
from .prepare import PreparedRequest

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnected(request: Request, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` unless the client disconnects first (then cancel it, raise ClientGone)."""
    work = asyncio.ensure_future(awaitable)
    watcher = asyncio.create_task(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done() and not watcher.done():  # we were cancelled ourselves
            work.cancel()
    if work in done:
        return work.result()
    work.cancel()
    raise ClientGone


class CancellableStream(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends (done, client gone, error)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None], **kwargs: Any):
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class _Progress:
    """One request's results so far, and the metrics they feed."""

    def __init__(self, req: PreparedRequest, ticket: Ticket, metrics: ServerMetrics):
        self._req = req
        self._ticket = ticket
        self._metrics = metrics
        self.results = {job.index: ChoiceResult() for job in req.jobs}
        self._last_token_at: dict[int, float] = {}
        self._reported_prompt_tokens: dict[int, int] = {}
        self._closed = False

    def record(self, index: int, delta: Delta) -> None:
        now = time.monotonic()
        if self._ticket.started():
            self._metrics.ttft.observe(now - self._ticket.admitted_at)
        elif delta.num_tokens and index in self._last_token_at:
            self._metrics.itl.observe(now - self._last_token_at[index])
        if delta.num_tokens:
            self._last_token_at[index] = now
        result = self.results[index]
        result.text += delta.text
        result.completion_tokens += delta.num_tokens
        self._metrics.generation_tokens.inc(delta.num_tokens)
        if delta.logprobs:
            result.logprobs.extend(delta.logprobs)
        if delta.finish_reason is not None:
            if (
                delta.completion_tokens is not None
                and delta.completion_tokens > result.completion_tokens
            ):
                self._metrics.generation_tokens.inc(
                    delta.completion_tokens - result.completion_tokens
                )
                result.completion_tokens = delta.completion_tokens
            result.finish_reason = delta.finish_reason
            self._metrics.finished.labels(delta.finish_reason).inc()
            if delta.prompt_tokens is not None:
                self._reported_prompt_tokens[self._req.jobs[index].prompt_index] = (
                    delta.prompt_tokens
                )

    def prompt_tokens(self) -> int:
        total = 0
        for p, counted in enumerate(self._req.prompt_tokens):
            total += counted if counted is not None else self._reported_prompt_tokens.get(p, 0)
        return total

    def completion_tokens(self) -> int:
        return sum(r.completion_tokens for r in self.results.values())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ticket.finish()
        self._metrics.duration.observe(time.monotonic() - self._ticket.admitted_at)
        self._metrics.prompt_tokens.inc(self.prompt_tokens())
        for result in self.results.values():
            if result.finish_reason is None:
                self._metrics.finished.labels("abort").inc()


def _upstream(exc: BackendError) -> UpstreamError:
    error = UpstreamError(exc.message, code=exc.code, status=exc.status)
    if 400 <= exc.status < 500:
        error.error_type = "invalid_request_error"
    return error


class CompletionService:
    """Answers prepared chat and text completion requests."""

    def __init__(self, backend: Backend, tracker: RequestTracker, metrics: ServerMetrics):
        self.backend = backend
        self.tracker = tracker
        self.metrics = metrics

    async def respond(self, req: PreparedRequest, request: Request) -> Response:
        ticket = self.tracker.admit(len(req.jobs))
        run = ChoiceRun(self.backend, req.jobs, req.request_id)
        progress = _Progress(req, ticket, self.metrics)
        handed_over = False
        try:
            run.start()
            if req.stream:
                first = await until_disconnected(request, run.next())
                stream = self._stream(req, run, progress, first)
                handed_over = True

                def stop() -> None:
                    run.cancel()
                    progress.close()

                return CancellableStream(
                    stream,
                    on_close=stop,
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            await until_disconnected(request, self._collect(run, progress))
            return JSONResponse(full_response(req, progress.results, progress.prompt_tokens()))
        except BackendError as exc:
            raise _upstream(exc) from exc
        except ClientGone:
            return Response(status_code=499)
        finally:
            if not handed_over:
                run.cancel()
                progress.close()

    @staticmethod
    async def _collect(run: ChoiceRun, progress: _Progress) -> None:
        while (event := await run.next()) is not None:
            progress.record(*event)

    async def _stream(
        self,
        req: PreparedRequest,
        run: ChoiceRun,
        progress: _Progress,
        first: tuple[int, Delta] | None,
    ) -> AsyncIterator[str]:
        announced: set[int] = set()
        event = first
        try:
            while event is not None:
                index, delta = event
                offset = len(progress.results[index].text)
                progress.record(index, delta)
                if req.kind == "chat" and index not in announced:
                    announced.add(index)
                    yield sse(chunk(req, index, text="", role=True))
                if delta.text or delta.logprobs or delta.finish_reason:
                    text = delta.text if (delta.text or req.kind != "chat") else None
                    yield sse(
                        chunk(
                            req,
                            index,
                            text=text,
                            logprobs=delta.logprobs,
                            finish_reason=delta.finish_reason,
                            text_offset=offset,
                        )
                    )
                event = await run.next()
            if req.include_usage:
                yield sse(usage_chunk(req, progress.prompt_tokens(), progress.completion_tokens()))
        except BackendError as exc:
            error = _upstream(exc)
            yield sse(error_body(error.message, error.error_type, error.param, error.code))
        finally:
            run.cancel()
            progress.close()
        yield sse("[DONE]")
