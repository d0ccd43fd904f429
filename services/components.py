"""Build the ingest/retrieval components the settings choose; heavy imports stay inside.

The worker and the gateway both describe the stores the same way (one ``IngestConfig``
derived from ``Settings``), so what the worker writes is what the gateway searches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.config import IngestConfig
    from ingest.pipeline import IngestPipeline
    from llm.client import LLMClient
    from retriever.search import HybridSearcher
    from services.settings import Settings


def ingest_config(settings: Settings) -> IngestConfig:
    """The ingest configuration (stores, chunking, embedder) for these settings."""
    from ingest.config import IngestConfig

    kwargs: dict[str, Any] = dict(
        data_dir=settings.data_dir,
        vector_store=settings.vector_store,
        chroma_host=settings.chroma_host,
        chroma_port=settings.chroma_port,
        chroma_collection=settings.chroma_collection,
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        lexical_backend=settings.lexical_backend,
        lexical_database_url=settings.resolved_database_url,
    )
    if settings.embedding_model:
        kwargs["embedding_model"] = settings.embedding_model
    return IngestConfig(**kwargs)


def create_pipeline(settings: Settings, *, sandboxed: bool = False) -> IngestPipeline:
    """An ``IngestPipeline`` (loads the embedding model: call once per process).

    ``sandboxed`` (the worker): parse each file in a child process with the settings'
    memory cap and time limit, so a decompression bomb fails its job, not the worker.
    """
    from dataclasses import replace

    from ingest.pipeline import IngestPipeline

    config = ingest_config(settings)
    if sandboxed:
        config = replace(
            config,
            parse_memory_mb=settings.parse_memory_mb,
            parse_time_limit_s=settings.parse_time_limit_s,
        )
    return IngestPipeline(config)


def create_searcher(settings: Settings) -> HybridSearcher:
    """A ``HybridSearcher`` over the same stores the worker writes (loads the embedding model)."""
    from retriever.search import HybridSearcher

    return HybridSearcher.from_config(
        ingest_config(settings),
        candidate_k=settings.candidate_k,
        rrf_k=settings.rrf_k,
        batch_queries=settings.query_batching,
        query_threads=settings.query_embedding_threads,
        rerank=settings.rerank,
        rerank_depth=settings.rerank_depth,
    )


def create_llm_client(settings: Settings) -> LLMClient:
    """The gateway's LLM client: every replica the settings name, with retries and a breaker."""
    from llm.client import LLMClient
    from llm.resilience import CircuitBreaker, RetryPolicy

    return LLMClient(
        settings.llm_replica_urls,
        settings.llm_model,
        settings.llm_api_key,
        settings.llm_timeout_s,
        retry=RetryPolicy(attempts=max(1, settings.llm_retry_attempts)),
        breaker=CircuitBreaker(settings.llm_breaker_failures, settings.llm_breaker_cooldown_s),
        health_interval_s=settings.llm_health_interval_s,
        health_timeout_s=settings.llm_health_timeout_s,
    )


def supported_extensions() -> frozenset[str]:
    """File extensions the ingest pipeline parses (``.pdf``, ``.md``, ...)."""
    from ingest.pipeline import SUPPORTED_EXTENSIONS

    return frozenset(
        ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in SUPPORTED_EXTENSIONS
    )
