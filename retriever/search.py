"""Hybrid search: dense (Chroma) and lexical (FTS5) candidates, ACL-filtered, fused by RRF."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest.config import IngestConfig
from ingest.embedder import Embedder
from ingest.stores.acl import AccessScope
from ingest.stores.lexical_choice import LexicalStore, open_lexical_index
from ingest.stores.vector import VectorStore
from retriever.fusion import reciprocal_rank_fusion
from retriever.query_embedding import BatchingQueryEmbedder


@dataclass(frozen=True)
class SearchHit:
    """One chunk the caller may read, with what a result list or a citation shows."""

    chunk_id: str
    document_id: str
    title: str
    page: int | None
    section: str | None
    text: str
    score: float


class HybridSearcher:
    """Search both stores with the caller's scope applied inside each query, then fuse.

    Dense search finds paraphrases ("roll over vacation" ~ "carry over annual leave");
    BM25 finds exact names and numbers. Each store returns ``candidate_k`` candidates that
    the scope already allows; reciprocal rank fusion merges them by rank.
    """

    def __init__(
        self,
        vector_store: VectorStore,
        lexical_index: LexicalStore,
        embedder: Embedder,
        candidate_k: int = 30,
        rrf_k: int = 60,
        dense_weight: float = 1.0,
        lexical_weight: float = 1.0,
        batch_queries: bool = True,
        query_threads: int | None = 1,
    ) -> None:
        self.vector_store = vector_store
        self.lexical_index = lexical_index
        self.embedder = embedder
        self.query_embedder: Embedder | BatchingQueryEmbedder = (
            BatchingQueryEmbedder(embedder, threads=query_threads) if batch_queries else embedder
        )
        self.candidate_k = candidate_k
        self.rrf_k = rrf_k
        self.weights = (dense_weight, lexical_weight)

    @classmethod
    def from_config(
        cls, config: IngestConfig, *, embedder: Embedder | None = None, **options: Any
    ) -> HybridSearcher:
        """Searcher over the stores a pipeline with the same config writes to."""
        return cls(
            VectorStore.from_config(config),
            open_lexical_index(config),
            embedder or Embedder(config.resolved_embedding_model()),
            **options,
        )

    def search(self, query: str, k: int, scope: AccessScope) -> list[SearchHit]:
        """The ``k`` best chunks for ``query`` among those ``scope`` may read."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("The search query is empty; type a question or some keywords.")
        if k <= 0:
            raise ValueError(f"k must be a positive number of results, not {k}.")
        if not isinstance(scope, AccessScope):
            raise TypeError("scope must be a ingest.stores.acl.AccessScope")
        depth = max(self.candidate_k, k)
        dense = self.vector_store.query(self.query_embedder.embed_query(query), depth, scope)
        lexical = self.lexical_index.search(query, depth, scope)
        fused = reciprocal_rank_fusion(
            [[cid for cid, _, _ in dense], [cid for cid, _ in lexical]],
            k=self.rrf_k,
            weights=self.weights,
        )[:k]
        chunks = self.lexical_index.get(cid for cid, _ in fused)
        hits = []
        for chunk_id, score in fused:
            chunk = chunks.get(chunk_id)
            if chunk is None:  # deleted between the two reads
                continue
            hits.append(
                SearchHit(
                    chunk_id=chunk.chunk_id,
                    document_id=chunk.document_id,
                    title=chunk.title,
                    page=chunk.page,
                    section=chunk.section,
                    text=chunk.text,
                    score=score,
                )
            )
        return hits
