"""Chunk embeddings in Chroma (embedded PersistentClient or a Chroma server), ACL in the where.

We always pass our own vectors (Chroma's default embedding function, which would
download an ONNX model, is never created) and telemetry is off. Metadata holds the
chunk's document, position, display fields and ACL keys (see ingest.stores.acl), so a
filtered query only ever returns chunks the caller may read.

Embedded mode and several processes: a PersistentClient keeps its HNSW index in memory
and does not see what another process (the ingest worker) wrote later, or fails with
"Nothing found on disk" if it opened the collection while it was still empty. So every
write also replaces a small generation file beside the database, and before each read a
store checks it; when another process has written since, the store closes and reopens its
client, which reloads the index from disk (Chroma replays the writer's log). This works
when the reading process holds only one client for the path (the gateway's searcher);
the server mode (a Chroma server) needs none of it.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from ingest.chunking import Chunk
from ingest.errors import IngestError
from ingest.stores.acl import GROUP_KEY_PREFIX, PUBLIC_KEY, chunk_acl_metadata

_ADD_BATCH = 1000
GENERATION_FILE = "enclave-generation"

log = logging.getLogger(__name__)


class ScopeFilter(Protocol):
    """What the store needs of an access scope (ingest.stores.acl.AccessScope)."""

    def chroma_where(self) -> dict[str, Any] | None: ...


def chunk_metadata(chunk: Chunk, acl: dict[str, bool]) -> dict[str, Any]:
    """Chroma metadata of a chunk: no None values (Chroma rejects them), ACL keys merged in."""
    meta: dict[str, Any] = {
        "document_id": chunk.document_id,
        "ordinal": chunk.ordinal,
        "title": chunk.title,
    }
    if chunk.page is not None:
        meta["page"] = chunk.page
    if chunk.section:
        meta["section"] = chunk.section
    meta.update(acl)
    return meta


class VectorStore:
    """A Chroma collection of chunk vectors in cosine space."""

    def __init__(
        self,
        *,
        mode: str = "embedded",
        path: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 8002,
        collection: str = "enclave_chunks",
    ) -> None:
        if mode not in ("embedded", "server"):
            raise ValueError(f"mode must be 'embedded' or 'server', not {mode!r}")
        if mode == "embedded" and path is None:
            raise ValueError("an embedded vector store needs a path")
        self.mode, self.path, self.host, self.port = mode, path, host, port
        self.collection_name = collection
        self._collection: Any = None
        self._client: Any = None
        self._lock = threading.RLock()
        self._seen_generation: str | None = None

    @classmethod
    def from_config(cls, config: Any) -> VectorStore:
        """Build from an ingest.config.IngestConfig."""
        return cls(
            mode=config.vector_store,
            path=config.chroma_path,
            host=config.chroma_host,
            port=config.chroma_port,
            collection=config.chroma_collection,
        )

    @property
    def collection(self) -> Any:
        """The Chroma collection, connecting on first use."""
        if self._collection is None:
            with self._lock:
                if self._collection is None:
                    self._collection = self._open()
        return self._collection

    @property
    def _generation_path(self) -> Path | None:
        return (
            Path(self.path) / GENERATION_FILE
            if self.mode == "embedded" and self.path is not None
            else None
        )

    def _read_generation(self) -> str | None:
        path = self._generation_path
        if path is None:
            return None
        try:
            return path.read_text(encoding="ascii")
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def _mark_written(self) -> None:
        """Tell readers in other processes that the collection changed."""
        path = self._generation_path
        if path is None:
            return
        token = f"{os.getpid()}:{uuid.uuid4().hex}"
        staging = path.with_name(f".{GENERATION_FILE}.{token.replace(':', '-')}")
        try:
            staging.write_text(token, encoding="ascii")
            os.replace(staging, path)
        except OSError as exc:  # never mask the write's own outcome
            log.warning("could not update %s: %s", path, exc)
            return
        self._seen_generation = token

    def _refresh_if_stale(self) -> None:
        """Reopen the embedded client when another process wrote since we last looked."""
        if self._collection is None or self._generation_path is None:
            return
        token = self._read_generation()
        if token is None or token == self._seen_generation:
            return
        self._seen_generation = token
        if token.startswith(f"{os.getpid()}:"):
            return  # written in this process: the shared in-memory index already has it
        log.debug("vector store at %s changed in another process; reopening", self.path)
        client = self._client
        self._collection = self._client = None
        if client is not None and hasattr(client, "close"):
            client.close()
        self._collection = self._open()

    def _open(self) -> Any:
        import chromadb
        from chromadb.config import Settings

        if self._seen_generation is None:
            self._seen_generation = self._read_generation()

        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        try:
            if self.mode == "embedded":
                assert self.path is not None
                Path(self.path).mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
            else:
                self._client = chromadb.HttpClient(
                    host=self.host, port=self.port, settings=settings
                )
            return self._client.get_or_create_collection(
                name=self.collection_name,
                metadata={"hnsw:space": "cosine"},
                embedding_function=None,
            )
        except Exception as exc:
            where = self.path if self.mode == "embedded" else f"{self.host}:{self.port}"
            raise IngestError(f"Cannot open the vector store at {where}: {exc}") from exc

    def reachable(self) -> bool:
        """Whether the store answers now (the server's heartbeat; embedded: always)."""
        if self.mode == "embedded":
            return True
        try:
            self.collection  # noqa: B018 - connects on first use
            self._client.heartbeat()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not now"
            self._collection = None  # reconnect next time
            return False

    def add(
        self, chunks: list[Chunk], embeddings: list[list[float]], groups: Iterable[str] = ()
    ) -> None:
        """Store chunks with their vectors, readable by ``groups`` (none = public)."""
        if len(chunks) != len(embeddings):
            raise ValueError(f"{len(chunks)} chunks but {len(embeddings)} embeddings")
        acl = chunk_acl_metadata(groups)
        with self._lock:
            self._refresh_if_stale()
            try:
                for start in range(0, len(chunks), _ADD_BATCH):
                    batch = chunks[start : start + _ADD_BATCH]
                    self.collection.add(
                        ids=[c.chunk_id for c in batch],
                        embeddings=embeddings[start : start + _ADD_BATCH],
                        documents=[c.text for c in batch],
                        metadatas=[chunk_metadata(c, acl) for c in batch],
                    )
            finally:
                self._mark_written()

    def delete_document(self, document_id: str) -> None:
        """Remove every vector of a document (nothing to remove is fine)."""
        with self._lock:
            self._refresh_if_stale()
            try:
                self.collection.delete(where={"document_id": document_id})
            finally:
                self._mark_written()

    def set_acl(self, document_id: str, acl: dict[str, bool]) -> int:
        """Replace the ACL keys of every vector of a document; returns how many were rewritten.

        Group keys the new ACL drops are set to False rather than removed, so the result
        is the same whether Chroma merges or replaces metadata on update.
        """
        with self._lock:
            self._refresh_if_stale()
            try:
                found = self.collection.get(
                    where={"document_id": document_id}, include=["metadatas"]
                )
                ids, metadatas = found["ids"], found["metadatas"] or []
                rewritten = []
                for meta in metadatas:
                    kept = {
                        k: v
                        for k, v in dict(meta or {}).items()
                        if k != PUBLIC_KEY and not k.startswith(GROUP_KEY_PREFIX)
                    }
                    dropped = {k: False for k in (meta or {}) if k.startswith(GROUP_KEY_PREFIX)}
                    rewritten.append({**kept, **dropped, **acl})
                for start in range(0, len(ids), _ADD_BATCH):
                    self.collection.update(
                        ids=ids[start : start + _ADD_BATCH],
                        metadatas=rewritten[start : start + _ADD_BATCH],
                    )
                return len(ids)
            finally:
                self._mark_written()

    def query(
        self, embedding: list[float], k: int, scope: ScopeFilter
    ) -> list[tuple[str, float, dict[str, Any]]]:
        """Nearest ``k`` chunks the scope may read: (chunk_id, cosine distance, metadata)."""
        if k <= 0:
            return []
        where = scope.chroma_where()
        with self._lock:
            self._refresh_if_stale()
            result = self.collection.query(
                query_embeddings=[embedding],
                n_results=k,
                where=where,
                include=["metadatas", "distances"],
            )
        ids = result["ids"][0] if result["ids"] else []
        distances = result["distances"][0] if result.get("distances") else [0.0] * len(ids)
        metadatas = result["metadatas"][0] if result.get("metadatas") else [{}] * len(ids)
        return [
            (i, float(d), dict(m or {})) for i, d, m in zip(ids, distances, metadatas, strict=True)
        ]

    def document_chunk_ids(self, document_id: str) -> list[str]:
        """Ids stored for a document (used to prove deletes are complete)."""
        with self._lock:
            self._refresh_if_stale()
            return list(self.collection.get(where={"document_id": document_id}, include=[])["ids"])

    def export_rows(self, page: int = 500) -> Iterator[dict[str, Any]]:
        """Every stored vector with its text and metadata (backup), page by page."""
        with self._lock:
            self._refresh_if_stale()
            offset = 0
            while True:
                got = self.collection.get(
                    include=["embeddings", "documents", "metadatas"], limit=page, offset=offset
                )
                if not got["ids"]:
                    return
                for i, chunk_id in enumerate(got["ids"]):
                    yield {
                        "id": chunk_id,
                        "embedding": [float(x) for x in got["embeddings"][i]],
                        "document": got["documents"][i],
                        "metadata": dict(got["metadatas"][i] or {}),
                    }
                offset += len(got["ids"])

    def import_rows(self, rows: Iterable[dict[str, Any]]) -> int:
        """Add rows from ``export_rows`` (restore); returns the count."""
        count = 0
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            if batch:
                self.collection.add(
                    ids=[r["id"] for r in batch],
                    embeddings=[r["embedding"] for r in batch],
                    documents=[r["document"] for r in batch],
                    metadatas=[r["metadata"] for r in batch],
                )
                batch.clear()

        with self._lock:
            self._refresh_if_stale()
            try:
                for row in rows:
                    batch.append(row)
                    count += 1
                    if len(batch) >= _ADD_BATCH:
                        flush()
                flush()
            finally:
                self._mark_written()
        return count

    def count(self) -> int:
        """Number of vectors in the collection."""
        with self._lock:
            self._refresh_if_stale()
            return int(self.collection.count())
