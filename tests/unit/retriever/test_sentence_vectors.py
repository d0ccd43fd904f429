"""Attribution's sentence vectors: repeated texts come from the cache, new ones in one batch."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from retriever.sentence_vectors import SentenceVectorCache


def vector(text: str) -> list[float]:
    """A deterministic stand-in for MiniLM's vector of ``text``."""
    return [float(len(text)), float(sum(map(ord, text)) % 97), 1.0]


class CountingEmbed:
    """Embeds with ``vector`` and records each batch it was asked for."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [vector(t) for t in texts]


def test_repeated_texts_are_embedded_once_and_answers_keep_the_callers_order():
    embed = CountingEmbed()
    cache = SentenceVectorCache(embed)
    first = cache(["a b", "c", "a b"])
    assert embed.calls == [["a b", "c"]]  # one batch, each distinct text once
    again = cache(["c", "new one", "a b"])
    assert embed.calls[1] == ["new one"]
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[2], first[0])
    assert [v.tolist() for v in again] == [vector(t) for t in ["c", "new one", "a b"]]
    assert cache.embedded == 3


def test_the_least_recently_used_text_goes_first_when_full():
    embed = CountingEmbed()
    cache = SentenceVectorCache(embed, max_entries=2)
    cache(["x"])
    cache(["y"])
    cache(["x"])  # x is now the most recent
    cache(["z"])  # y goes
    assert len(cache) == 2
    embed.calls.clear()
    cache(["x", "z", "y"])
    assert embed.calls == [["y"]]


def test_a_wrong_number_of_vectors_is_an_error_and_nothing_is_cached():
    cache = SentenceVectorCache(lambda texts: [[0.0]])
    with pytest.raises(ValueError, match="embedded 2 texts, got 1 vectors"):
        cache(["a", "b"])
    assert len(cache) == 0
    with pytest.raises(ValueError, match="max_entries"):
        SentenceVectorCache(CountingEmbed(), max_entries=0)


def test_concurrent_callers_get_their_own_vectors():
    embed = CountingEmbed()
    cache = SentenceVectorCache(embed, max_entries=50)
    errors: list[str] = []

    def ask(worker: int) -> None:
        for round_ in range(30):
            texts = [f"sentence {(worker + round_ + i) % 80}" for i in range(5)]
            for text, got in zip(texts, cache(texts), strict=True):
                if not np.array_equal(got, np.asarray(vector(text), np.float32)):
                    errors.append(text)

    threads = [threading.Thread(target=ask, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) <= 50
