"""Offline reranking: MiniLM token-level late interaction (ColBERT's MaxSim).

No cross-encoder can be downloaded here, so the second stage reuses the embedding model
we already ship. A sentence embedding squeezes a 200-word chunk into one vector, and a
question about one clause of it competes with the rest; late interaction keeps a vector
per token and scores a chunk by how well each query word is matched somewhere in it:
``score = mean over query tokens q of max over chunk tokens d of cos(q, d)``. Query
tokens that are stopwords carry little and are dropped (all kept if nothing is left).
Cost: one MiniLM pass over the ``rerank_depth`` candidates per query. Token vectors are
not stored in the index (they would multiply its size by the chunk length); a small LRU
of recently reranked chunks (float16, about 190 kB each) saves recomputing popular ones.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ingest.embedder import Embedder
from ingest.stores.lexical import STOPWORDS

_WORD = re.compile(r"\w+")


class LateInteractionReranker:
    """MaxSim of MiniLM token vectors between the query's content words and a chunk."""

    def __init__(
        self, embedder: Embedder, *, with_heading: bool = True, cache_size: int = 256
    ) -> None:
        self.embedder = embedder
        self.with_heading = with_heading
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def _chunk_tokens(self, texts: list[str]) -> list[Any]:
        with self._lock:
            found = {t: self._cache[t] for t in texts if t in self._cache}
            for t in found:
                self._cache.move_to_end(t)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        fresh = dict(
            zip(
                missing,
                [m.astype(np.float16) for m in self.embedder.embed_tokens(missing)],
                strict=True,
            )
        )
        with self._lock:
            for text, matrix in fresh.items():
                self._cache[text] = matrix
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [found[t] if t in found else fresh[t] for t in texts]

    def _query_tokens(self, query: str) -> Any:
        content = " ".join(w for w in _WORD.findall(query) if w.lower() not in STOPWORDS)
        return self.embedder.embed_tokens([content or query])[0]

    def scores(self, query: str, passages: list[tuple[str, str]]) -> list[float]:
        """One score per (heading, text) passage, higher is better."""
        if not passages:
            return []
        q = self._query_tokens(query)
        texts = [f"{h}\n{t}" if self.with_heading and h else t for h, t in passages]
        return [
            float(np.max(q @ d.astype(np.float32).T, axis=1).mean())
            for d in self._chunk_tokens(texts)
        ]
