"""Our own BM25 lexical index: SQLite FTS5 with the porter stemmer, ACL applied in the SQL.

Chroma's local mode has no sparse/BM25 index, so keyword search lives here. The index
also keeps each chunk's display fields (title, page, section, clean text), which makes it
the place the searcher reads hits from whichever store found them. One short-lived
connection per call keeps it safe across threads and processes (WAL, busy timeout).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from ingest.chunking import Chunk
from ingest.errors import IngestError
from ingest.stores.acl import chunk_acl_column

SCHEMA_VERSION = 2  # 2: heading and body in separate FTS5 columns
_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    title TEXT NOT NULL,
    page INTEGER,
    section TEXT,
    text TEXT NOT NULL,
    is_public INTEGER NOT NULL,
    acl TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (document_id, ordinal);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (
    heading, body, tokenize = 'porter unicode61 remove_diacritics 2'
);
"""

# Words that match nearly every chunk; dropping them keeps BM25 on the content words.
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i
    if in into is it its me my of on or our should so than that the their them then there
    these they this to us was we were what when where which who whom why will with would
    you your am any all also about after before being just more most no not only other
    over same some such too very up out off once here each few own both""".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)
# bm25 column weights (heading, body): a word in the title or section heading says more
# about what a chunk is about than the same word in passing (measured: +1 question at 1
# and at 5 on the corpus against equal weights).
HEADING_WEIGHT, BODY_WEIGHT = 2.0, 1.0
# Columns of a chunk (``Chunk(*...)`` order) and of an exported row (backup/restore).
CHUNK_FIELDS = ("chunk_id", "document_id", "ordinal", "text", "title", "page", "section")
ROW_FIELDS = (*CHUNK_FIELDS, "is_public", "acl")


class ScopeFilter(Protocol):
    """What the index needs of an access scope (ingest.stores.acl.AccessScope)."""

    def sql_where(
        self, public_column: str = ..., acl_column: str = ...
    ) -> tuple[str, list[str]]: ...


def match_expression(query: str) -> str | None:
    """An FTS5 MATCH string for free text: content words, each quoted, joined by OR.

    Quoting every term means FTS syntax in a question (quotes, ``NEAR``, ``*``, ``-``,
    ``:``, parentheses) is searched as words and never raises. None when nothing is left.
    """
    unique = content_words(query)
    if not unique:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in unique)


def content_words(query: str) -> list[str]:
    """Lower-cased distinct words of a question, stopwords dropped unless nothing else is left.

    Shared by the FTS5 and the PostgreSQL index, so both search the same terms.
    """
    words = [w.lower() for w in _WORD.findall(query)]
    terms = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(terms))


class LexicalIndex:
    """BM25 search over chunk text and its title/section heading (weighted higher)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0)
        try:
            if not self._ready:
                self._prepare(conn)
            yield conn
        finally:
            conn.close()

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create the schema, or check that an existing file has ours."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        has_tables = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'chunks'"
        ).fetchone()[0]
        if has_tables and version != SCHEMA_VERSION:
            raise IngestError(
                f"The lexical index {self.path} has schema version {version}, this Enclave needs "
                f"{SCHEMA_VERSION}; remove it and re-ingest the documents."
            )
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._ready = True

    def reachable(self) -> bool:
        """A local file is always there (errors writing it are real errors)."""
        return True

    def add(self, chunks: list[Chunk], groups: Iterable[str] = ()) -> None:
        """Index chunks (all of one document) in one transaction, readable by ``groups``."""
        is_public, acl = chunk_acl_column(groups)
        with self._connect() as conn:
            try:
                with conn:
                    for chunk in chunks:
                        cur = conn.execute(
                            "INSERT INTO chunks (chunk_id, document_id, ordinal, title, page, section, text, is_public, acl)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                chunk.chunk_id,
                                chunk.document_id,
                                chunk.ordinal,
                                chunk.title,
                                chunk.page,
                                chunk.section,
                                chunk.text,
                                is_public,
                                acl,
                            ),
                        )
                        conn.execute(
                            "INSERT INTO chunks_fts (rowid, heading, body) VALUES (?, ?, ?)",
                            (cur.lastrowid, chunk.heading, chunk.text),
                        )
            except sqlite3.IntegrityError as exc:
                raise IngestError(
                    f"Chunks of this document are already indexed ({exc}); delete it first."
                ) from exc

    def delete_document(self, document_id: str) -> int:
        """Remove every chunk of a document; returns how many were removed (0 is fine)."""
        with self._connect() as conn, conn:
            conn.execute(
                "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE document_id = ?)",
                (document_id,),
            )
            return conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,)).rowcount

    def set_acl(self, document_id: str, acl_columns: tuple[int, str]) -> int:
        """Rewrite the ACL of every chunk of a document in one transaction; returns the count."""
        is_public, acl = acl_columns
        with self._connect() as conn, conn:
            return conn.execute(
                "UPDATE chunks SET is_public = ?, acl = ? WHERE document_id = ?",
                (is_public, acl, document_id),
            ).rowcount

    def search(self, query: str, k: int, scope: ScopeFilter) -> list[tuple[str, float]]:
        """Best ``k`` (chunk_id, score) the scope may read; higher score is better."""
        expression = match_expression(query)
        if expression is None or k <= 0:
            return []
        acl_sql, acl_params = scope.sql_where("c.is_public", "c.acl")
        sql = (
            f"SELECT c.chunk_id, bm25(chunks_fts, {HEADING_WEIGHT}, {BODY_WEIGHT}) AS rank FROM chunks_fts"
            " JOIN chunks c ON c.id = chunks_fts.rowid"
            f" WHERE chunks_fts MATCH ? AND {acl_sql} ORDER BY rank LIMIT ?"
        )
        with self._connect() as conn:
            rows = conn.execute(sql, [expression, *acl_params, k]).fetchall()
        return [(chunk_id, -rank) for chunk_id, rank in rows]

    def get(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        """Chunks by id (ids not indexed are left out)."""
        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return {}
        found: dict[str, Chunk] = {}
        with self._connect() as conn:
            for start in range(0, len(ids), 500):
                batch = ids[start : start + 500]
                marks = ",".join("?" * len(batch))
                for row in conn.execute(
                    "SELECT chunk_id, document_id, ordinal, text, title, page, section FROM chunks"
                    f" WHERE chunk_id IN ({marks})",
                    batch,
                ):
                    found[row[0]] = Chunk(*row)
        return found

    def document_chunk_ids(self, document_id: str) -> list[str]:
        """Ids of a document's chunks in reading order."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT chunk_id FROM chunks WHERE document_id = ? ORDER BY ordinal", (document_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def count(self, document_id: str | None = None) -> int:
        """Number of chunks indexed, in all or in one document."""
        with self._connect() as conn:
            if document_id is None:
                return conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            return conn.execute(
                "SELECT count(*) FROM chunks WHERE document_id = ?", (document_id,)
            ).fetchone()[0]

    def export_rows(self) -> list[dict[str, Any]]:
        """Every indexed chunk with its ACL columns (backup), in insertion order."""
        with self._connect() as conn:
            cursor = conn.execute(f"SELECT {', '.join(ROW_FIELDS)} FROM chunks ORDER BY id")
            return [dict(zip(ROW_FIELDS, row, strict=True)) for row in cursor]

    def import_rows(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert rows from ``export_rows`` (restore into an empty index); returns the count."""
        count = 0
        with self._connect() as conn, conn:
            for row in rows:
                chunk = Chunk(*(row[f] for f in CHUNK_FIELDS))
                cur = conn.execute(
                    f"INSERT INTO chunks ({', '.join(ROW_FIELDS)}) VALUES ({', '.join('?' * len(ROW_FIELDS))})",
                    [row[f] for f in ROW_FIELDS],
                )
                conn.execute(
                    "INSERT INTO chunks_fts (rowid, heading, body) VALUES (?, ?, ?)",
                    (cur.lastrowid, chunk.heading, chunk.text),
                )
                count += 1
        return count

    def fts_count(self) -> int:
        """Rows in the FTS table itself (equals count() unless something leaked)."""
        with self._connect() as conn:
            return conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
