"""Concurrent query embeddings share forward passes; repeats come from the cache."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from retriever.query_embedding import BatchingQueryEmbedder


class SlowEmbedder:
    """Vectors derived from the text; each call takes a while, like a forward pass."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.gate.wait()
        self.calls.append(list(texts))
        if self.fail:
            raise RuntimeError("model exploded")
        time.sleep(0.05)
        return [[float(len(t)), float(sum(map(ord, t)))] for t in texts]

    def pin_threads(self, count: int) -> None:
        self.threads = count


def test_concurrent_queries_share_batches_and_each_gets_its_own_vector():
    embedder = SlowEmbedder()
    batcher = BatchingQueryEmbedder(embedder)
    embedder.gate.clear()  # hold the first pass so the others pile up behind it
    queries = [f"question number {i}" for i in range(24)]
    with ThreadPoolExecutor(max_workers=24) as pool:
        futures = [pool.submit(batcher.embed_query, q) for q in queries]
        time.sleep(0.2)
        embedder.gate.set()
        vectors = [f.result(timeout=30) for f in futures]
    assert vectors == [[float(len(q)), float(sum(map(ord, q)))] for q in queries]
    assert len(embedder.calls) < len(queries)
    assert sorted(t for call in embedder.calls for t in call) == sorted(queries)


def test_repeated_queries_come_from_the_cache():
    embedder = SlowEmbedder()
    batcher = BatchingQueryEmbedder(embedder, cache_size=2)
    first = batcher.embed_query("annual leave")
    assert batcher.embed_query("annual leave") == first
    assert len(embedder.calls) == 1
    batcher.embed_query("b")
    batcher.embed_query("c")  # evicts "annual leave" (least recently used)
    batcher.embed_query("annual leave")
    assert len(embedder.calls) == 4


def test_a_failing_model_fails_every_waiting_caller_and_the_next_call_recovers():
    embedder = SlowEmbedder()
    batcher = BatchingQueryEmbedder(embedder)
    embedder.fail = True
    with pytest.raises(RuntimeError, match="exploded"):
        batcher.embed_query("x")
    embedder.fail = False
    assert batcher.embed_query("x") == [1.0, 120.0]


def test_an_embedder_that_cannot_pin_threads_still_answers():
    """A wrapper without ``pin_threads`` must not kill the batching thread (callers would hang)."""
    from retriever.query_embedding import BatchingQueryEmbedder

    class Plain:
        def embed_documents(self, texts):
            return [[float(len(t))] for t in texts]

    assert BatchingQueryEmbedder(Plain()).embed_query("abc") == [3.0]
