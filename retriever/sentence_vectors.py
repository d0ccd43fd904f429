"""Sentence embeddings for attribution, with an LRU of those already computed.

Attribution (``retriever.attribution``) embeds every sentence of every source passage
of an answer: 40 to 80 sentences, about 350 ms of one core per answer on the shared
corpus, spent after the model has answered, while the user waits for the citations.
The passages come from the same documents question after question (a policy handbook
is asked about all day), so most of those sentences were embedded minutes ago: on the
shared corpus' 100 questions, 2207 of the 3590 texts embedded were distinct. Their
vectors are kept (float32, 1.5 kB each for MiniLM) and only the new ones go to the model,
as one batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import cast

import numpy as np

from retriever.attribution import EmbedTexts

# ~25 MB of MiniLM vectors: a few thousand passages' sentences
DEFAULT_ENTRIES = 16384


class SentenceVectorCache:
    """``embed(texts)`` that answers repeated texts from an LRU and embeds the rest at once."""

    def __init__(self, embed: EmbedTexts, max_entries: int = DEFAULT_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._embed = embed
        self._max_entries = max_entries
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.embedded = 0  # texts sent to the model (for tests and benchmarks)

    def __call__(self, texts: list[str]) -> Sequence[Sequence[float]]:
        with self._lock:
            found = {t: self._vectors[t] for t in texts if t in self._vectors}
            for text in found:
                self._vectors.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            vectors = self._embed(missing)
            if len(vectors) != len(missing):
                raise ValueError(f"embedded {len(missing)} texts, got {len(vectors)} vectors")
            fresh = {
                t: np.asarray(v, dtype=np.float32) for t, v in zip(missing, vectors, strict=True)
            }
            with self._lock:
                self.embedded += len(missing)
                for text, vector in fresh.items():
                    self._vectors[text] = vector
                    self._vectors.move_to_end(text)
                while len(self._vectors) > self._max_entries:
                    self._vectors.popitem(last=False)
            found.update(fresh)
        # 1-d float32 arrays, which index and iterate as sequences of floats
        return cast(Sequence[Sequence[float]], [found[t] for t in texts])

    def __len__(self) -> int:
        return len(self._vectors)
