"""Hybrid search: dense (Chroma) and lexical (FTS5 or PostgreSQL) candidates, ACL-filtered, fused by RRF,
then optionally reranked.

Each stage can be switched off (a weight of 0 skips that store; ``reranker=None`` skips
the rerank) so bench/retrieval.py measures what every stage adds on two corpora.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from ingest.config import IngestConfig
from ingest.embedder import Embedder
from ingest.stores.acl import AccessScope
from ingest.stores.lexical_choice import LexicalStore, open_lexical_index
from ingest.stores.vector import VectorStore
from retriever.fusion import reciprocal_rank_fusion
from retriever.query_embedding import BatchingQueryEmbedder
from retriever.rerank import LateInteractionReranker


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

    @property
    def heading(self) -> str:
        """Title and section path, as the chunk was indexed."""
        return " > ".join(part for part in (self.title, self.section) if part)


class Reranker(Protocol):
    """Scores (heading, text) passages against the query; higher is better, one per passage."""

    def scores(self, query: str, passages: list[tuple[str, str]]) -> list[float]: ...


@dataclass(frozen=True)
class SearchOptions:
    """Knobs of the search stages.

    ``candidate_k``: candidates taken from each store; ``rrf_k``: RRF's rank constant;
    ``dense_weight``/``lexical_weight``: each store's weight in the fusion (0 skips it);
    ``reranker``: a second-stage scorer over the best ``rerank_depth`` fused candidates,
    whose order is fused with the first-stage order at ``rerank_weight`` (a reranker
    alone throws away what BM25 knows about rare names and numbers).
    """

    candidate_k: int = 30
    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    reranker: Reranker | None = None
    rerank_depth: int = 20
    rerank_weight: float = 1.0


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
        *,
        options: SearchOptions | None = None,
        batch_queries: bool = True,
        query_threads: int | None = 1,
    ) -> None:
        self.vector_store = vector_store
        self.lexical_index = lexical_index
        self.embedder = embedder
        # Concurrent searches share one query-embedding pass and a cache of recent vectors
        # (retriever/query_embedding.py); ``batch_queries=False`` is the plain path.
        self.query_embedder: Embedder | BatchingQueryEmbedder = (
            BatchingQueryEmbedder(embedder, threads=query_threads) if batch_queries else embedder
        )
        self.options = options or SearchOptions(
            candidate_k=candidate_k,
            rrf_k=rrf_k,
            dense_weight=dense_weight,
            lexical_weight=lexical_weight,
        )

    @classmethod
    def from_config(
        cls,
        config: IngestConfig,
        *,
        embedder: Embedder | None = None,
        rerank: bool = True,
        rerank_depth: int = 20,
        batch_queries: bool = True,
        query_threads: int | None = 1,
        **weights: Any,
    ) -> HybridSearcher:
        """Searcher over the stores a pipeline with the same config writes to.

        The production configuration: dense + lexical fused by RRF, then the MiniLM
        late-interaction rerank (``rerank=False`` skips it). bench/retrieval.py measured
        each stage on two corpora (docs/decisions.md has the figures).
        """
        embedder = embedder or Embedder(config.resolved_embedding_model())
        options = SearchOptions(
            **weights,
            reranker=LateInteractionReranker(embedder) if rerank else None,
            rerank_depth=rerank_depth,
        )
        return cls(
            VectorStore.from_config(config),
            open_lexical_index(config),
            embedder,
            options=options,
            batch_queries=batch_queries,
            query_threads=query_threads,
        )

    def search(self, query: str, k: int, scope: AccessScope) -> list[SearchHit]:
        """The ``k`` best chunks for ``query`` among those ``scope`` may read."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("The search query is empty; type a question or some keywords.")
        if k <= 0:
            raise ValueError(f"k must be a positive number of results, not {k}.")
        if not isinstance(scope, AccessScope):
            raise TypeError("scope must be a ingest.stores.acl.AccessScope")
        opts = self.options
        depth = max(opts.candidate_k, k)
        rankings: list[list[str]] = []
        weights: list[float] = []
        if opts.dense_weight > 0:
            dense = self.vector_store.query(self.query_embedder.embed_query(query), depth, scope)
            rankings.append([cid for cid, _, _ in dense])
            weights.append(opts.dense_weight)
        if opts.lexical_weight > 0:
            rankings.append([cid for cid, _ in self.lexical_index.search(query, depth, scope)])
            weights.append(opts.lexical_weight)
        fused = reciprocal_rank_fusion(rankings, k=opts.rrf_k, weights=weights)
        keep = max(k, opts.rerank_depth) if opts.reranker is not None else k
        hits = self._hits(fused[:keep])
        if opts.reranker is not None and len(hits) > 1:
            hits = self._rerank(query, hits, opts.reranker)
        return hits[:k]

    def _hits(self, fused: list[tuple[str, float]]) -> list[SearchHit]:
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

    def _rerank(self, query: str, hits: list[SearchHit], reranker: Reranker) -> list[SearchHit]:
        """Fuse the first-stage order with the reranker's order (both by rank)."""
        opts = self.options
        depth = hits[: opts.rerank_depth]
        scores = reranker.scores(query, [(h.heading, h.text) for h in depth])
        by_rerank = [
            h.chunk_id for _, h in sorted(zip(scores, depth, strict=True), key=lambda p: -p[0])
        ]
        fused = reciprocal_rank_fusion(
            [[h.chunk_id for h in depth], by_rerank],
            k=opts.rrf_k,
            weights=[1.0, opts.rerank_weight],
        )
        by_id = {h.chunk_id: h for h in depth}
        reranked = [_with_score(by_id[cid], score) for cid, score in fused]
        return reranked + hits[opts.rerank_depth :]


def _with_score(hit: SearchHit, score: float) -> SearchHit:
    return replace(hit, score=score)
