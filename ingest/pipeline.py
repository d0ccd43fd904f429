"""Ingest one file end to end (parse, chunk, embed, index) and delete documents, atomically.

The worker calls ``IngestPipeline.ingest`` per uploaded document and ``delete`` when a
document is removed. A failure at any stage leaves nothing of the document in either
store and surfaces as an ``IngestError`` whose message the uploader can act on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from ingest.chunking import Chunk, chunk_elements
from ingest.config import IngestConfig
from ingest.embedder import Embedder
from ingest.errors import EmptyDocument, IngestError, StoreUnavailable
from ingest.parse import SUPPORTED_EXTENSIONS, check_supported, parse_document
from ingest.sandbox import ParseSandbox
from ingest.stores.acl import (
    AccessError,
    narrowest_groups,
    normalise_groups,
    restricted_acl_column,
    restricted_acl_metadata,
)
from ingest.stores.lexical_choice import LexicalStore, open_lexical_index
from ingest.stores.vector import VectorStore

__all__ = ["IngestPipeline", "SUPPORTED_EXTENSIONS", "Progress"]

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

# Share of the progress bar each stage ends at (embedding dominates on CPU).
_PARSED, _CHUNKED, _EMBEDDED = 0.3, 0.35, 0.9
_EMBED_BATCH = 64


class IngestPipeline:
    """Parse → chunk → embed → write to Chroma and FTS5; heavy parts are created on first use."""

    def __init__(self, config: IngestConfig, *, embedder: Embedder | None = None) -> None:
        self.config = config
        self._embedder = embedder
        self._vector_store: VectorStore | None = None
        self._lexical_index: LexicalStore | None = None
        self._sandbox: ParseSandbox | None = None
        if config.parse_memory_mb > 0:
            self._sandbox = ParseSandbox(config.parse_memory_mb, config.parse_time_limit_s)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.config.resolved_embedding_model())
        return self._embedder

    @property
    def vector_store(self) -> VectorStore:
        if self._vector_store is None:
            self._vector_store = VectorStore.from_config(self.config)
        return self._vector_store

    @property
    def lexical_index(self) -> LexicalStore:
        if self._lexical_index is None:
            self._lexical_index = open_lexical_index(self.config)
        return self._lexical_index

    def ingest(
        self,
        path: Path,
        *,
        document_id: str,
        title: str | None = None,
        groups: Iterable[str] = (),
        progress: Progress | None = None,
    ) -> list[Chunk]:
        """Index a file as ``document_id`` (replacing an earlier version) and return its chunks.

        Raises UnsupportedFileType, EmptyDocument, CorruptDocument or IngestError; in every
        failure case no chunk of ``document_id`` remains in either store (an earlier
        version included: a document is either wholly the new file or absent).
        """
        path = Path(path)
        if not document_id or not document_id.strip():
            raise IngestError("A document id is required.")

        def report(fraction: float, stage: str) -> None:
            if progress is not None:
                progress(min(1.0, max(0.0, fraction)), stage)

        try:
            self.require_stores()
            check_supported(path)
            try:
                group_names = sorted(normalise_groups(groups))
            except AccessError as exc:
                raise IngestError(str(exc)) from exc
            report(0.0, "parsing")
            parsed = self._sandbox.parse(path) if self._sandbox else parse_document(path)
            report(_PARSED, "chunking")
            doc_title = (title or "").strip() or parsed.title or path.stem
            chunks = chunk_elements(
                parsed.elements,
                document_id=document_id,
                title=doc_title,
                chunk_size=self.config.chunk_size,
                chunk_overlap=self.config.chunk_overlap,
            )
            if not chunks:
                raise EmptyDocument(f"{path.name} contains no text to index.")
            report(_CHUNKED, "embedding")
            embeddings: list[list[float]] = []
            for start in range(0, len(chunks), _EMBED_BATCH):
                batch = chunks[start : start + _EMBED_BATCH]
                embeddings += self.embedder.embed_documents([c.index_text for c in batch])
                report(
                    _CHUNKED + (_EMBEDDED - _CHUNKED) * len(embeddings) / len(chunks), "embedding"
                )
            report(_EMBEDDED, "indexing")
            self._remove(document_id)
            self.lexical_index.add(chunks, group_names)
            self.vector_store.add(chunks, embeddings, group_names)
            report(1.0, "indexing")
            return chunks
        except BaseException as exc:
            self._cleanup_after_failure(document_id)
            if isinstance(exc, Exception) and not isinstance(exc, StoreUnavailable):
                self.require_stores()  # a store that went away mid-ingest: wait, not fail
            if isinstance(exc, IngestError) or not isinstance(exc, Exception):
                raise
            log.exception("ingesting %s as %s failed", path.name, document_id)
            raise IngestError(f"Ingesting {path.name} failed: {exc}") from exc

    def require_stores(self) -> None:
        """Raise StoreUnavailable unless every store answers now.

        An unreachable Chroma server or PostgreSQL says nothing about the document: the
        job should wait for the store, not fail for good.
        """
        stores = (("vector store", self.vector_store), ("lexical index", self.lexical_index))
        for name, store in stores:
            if not store.reachable():
                raise StoreUnavailable(
                    f"The {name} cannot be reached right now; the document will be "
                    "ingested once it is back."
                )

    def delete(self, document_id: str) -> None:
        """Remove every chunk of a document from both stores; deleting twice is fine."""
        try:
            self._remove(document_id)
        except IngestError:
            raise
        except Exception as exc:
            raise IngestError(f"Deleting document {document_id} failed: {exc}") from exc

    def set_groups(
        self, document_id: str, old_groups: Iterable[str], new_groups: Iterable[str]
    ) -> int:
        """Rewrite who may read every chunk of a document, in both stores; returns the chunk count.

        Two passes: first the narrowest ACL (readers of both the old and the new groups),
        then the new one. Each store rewrites a document in one call, so at every moment
        a chunk is readable by at most the union of what the two ACLs allow together,
        never by someone outside both. On failure both stores go back to ``old_groups``.
        """
        try:
            old_names = sorted(normalise_groups(old_groups))
            new_names = sorted(normalise_groups(new_groups))
        except AccessError as exc:
            raise IngestError(str(exc)) from exc
        narrow = narrowest_groups(old_names, new_names)
        steps = [narrow, frozenset(new_names) or None]
        try:
            count = 0
            for step in steps:
                self.lexical_index.set_acl(document_id, restricted_acl_column(step))
                count = self.vector_store.set_acl(document_id, restricted_acl_metadata(step))
            return count
        except Exception as exc:
            log.exception("changing the groups of %s failed; restoring the old ones", document_id)
            old = frozenset(old_names) or None
            try:
                self.vector_store.set_acl(document_id, restricted_acl_metadata(narrow))
                self.lexical_index.set_acl(document_id, restricted_acl_column(old))
                self.vector_store.set_acl(document_id, restricted_acl_metadata(old))
            except Exception:  # noqa: BLE001 - the original error is the one to report
                log.exception("restoring the groups of %s failed", document_id)
            if isinstance(exc, IngestError):
                raise
            raise IngestError(
                f"Changing the groups of document {document_id} failed: {exc}"
            ) from exc

    def _remove(self, document_id: str) -> None:
        self.lexical_index.delete_document(document_id)
        self.vector_store.delete_document(document_id)

    def _cleanup_after_failure(self, document_id: str) -> None:
        try:
            self._remove(document_id)
        except Exception:  # the original error matters more; log this one
            log.exception("cleaning up document %s after a failed ingest also failed", document_id)
