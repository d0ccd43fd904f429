"""Query embeddings for many concurrent searches: one forward pass per batch, and a cache.

Embedding a short query costs about 19 ms of CPU on two cores, mostly fixed overhead of
a forward pass; fifty users searching at once each paid it separately and queued behind
one another. Here every thread that needs a vector leaves its query in a shared list;
one thread embeds whatever has gathered as one batch (while it runs, the next batch
gathers, so no artificial wait is added) and hands each caller its vector. Repeated
queries (the same question asked again, a chat follow-up re-searched) come from an LRU
cache and skip the model altogether. The batching thread runs torch on ``threads``
intra-op threads (default one): concurrency comes from the requests, and two OpenMP
threads on busy shared cores spin on each other (300 ms of CPU per query instead of 19).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Protocol

log = logging.getLogger(__name__)


class DocumentEmbedder(Protocol):
    """What the batcher needs of ``ingest.embedder.Embedder``."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def pin_threads(self, count: int) -> None: ...


class BatchingQueryEmbedder:
    """Thread-safe ``embed_query`` that batches concurrent callers and caches results."""

    def __init__(
        self,
        embedder: DocumentEmbedder,
        *,
        max_batch: int = 64,
        cache_size: int = 4096,
        threads: int | None = 1,
    ) -> None:
        self._embedder = embedder
        self._threads = threads
        self._max_batch = max_batch
        self._cache_size = cache_size
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._pending: list[tuple[str, Future[list[float]]]] = []
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.batches = 0  # forward passes run (for tests and metrics)

    def embed_query(self, text: str) -> list[float]:
        """The normalised vector of one search query (blocks until its batch ran)."""
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
            future: Future[list[float]] = Future()
            self._pending.append((text, future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="query-embedding", daemon=True
                )
                self._thread.start()
            self._work.notify()
        return future.result()

    def _run(self) -> None:
        if self._threads is not None:
            try:
                self._embedder.pin_threads(self._threads)
            except Exception:  # noqa: BLE001 - a slower query beats a thread that died
                log.warning(
                    "could not pin the query-embedding thread's torch threads", exc_info=True
                )
        while True:
            with self._lock:
                while not self._pending:
                    self._work.wait()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
            texts = list(dict.fromkeys(text for text, _ in batch))
            try:
                vectors = dict(zip(texts, self._embedder.embed_documents(texts), strict=True))
            except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the error
                for _, future in batch:
                    future.set_exception(exc)
                continue
            self.batches += 1
            with self._lock:
                for text, vector in vectors.items():
                    self._cache[text] = vector
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            for text, future in batch:
                future.set_result(vectors[text])
