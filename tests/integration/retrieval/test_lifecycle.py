"""Delete, re-ingest, failed ingests and ACL through the real pipeline and both stores."""

from __future__ import annotations

import pytest

from ingest.errors import CorruptDocument, EmptyDocument, IngestError, UnsupportedFileType
from ingest.stores.acl import AccessScope
from retriever.search import HybridSearcher

from .conftest import write

pytestmark = pytest.mark.slow

PUBLIC = "# Canteen\n\n## Opening hours\n\nThe canteen opens at eight and serves lunch until two.\n"
SECRET = "# Salaries\n\n## Bands\n\nThe zorblax salary band for principal engineers tops out at 212000 dollars.\n"


def _traces(pipeline, document_id):
    return (
        pipeline.lexical_index.count(document_id),
        len(pipeline.vector_store.document_chunk_ids(document_id)),
    )


def test_delete_removes_every_trace_and_reingest_works(small_store, tmp_path):
    path = write(tmp_path / "canteen.md", PUBLIC)
    stages = []
    chunks = small_store.ingest(
        path, document_id="doc-1", progress=lambda f, s: stages.append((f, s))
    )
    assert _traces(small_store, "doc-1") == (len(chunks), len(chunks)) and chunks
    assert stages[0] == (0.0, "parsing") and stages[-1] == (1.0, "indexing")
    assert {s for _, s in stages} == {"parsing", "chunking", "embedding", "indexing"}
    assert [f for f, _ in stages] == sorted(f for f, _ in stages)

    small_store.delete("doc-1")
    small_store.delete("doc-1")  # idempotent
    assert _traces(small_store, "doc-1") == (0, 0)
    assert small_store.lexical_index.fts_count() == small_store.lexical_index.count()
    assert small_store.vector_store.count() == small_store.lexical_index.count()

    again = small_store.ingest(path, document_id="doc-1", title="Canteen hours")
    assert _traces(small_store, "doc-1") == (len(again), len(again))
    assert {c.title for c in again} == {"Canteen hours"}


def test_reingest_replaces_the_previous_version(small_store, tmp_path):
    small_store.ingest(write(tmp_path / "a.md", PUBLIC), document_id="doc-v")
    new = small_store.ingest(write(tmp_path / "b.md", SECRET), document_id="doc-v")
    assert _traces(small_store, "doc-v") == (len(new), len(new))
    searcher = HybridSearcher(
        small_store.vector_store, small_store.lexical_index, small_store.embedder
    )
    hits = searcher.search("canteen lunch", 5, AccessScope(None))
    assert all("canteen" not in h.text for h in hits if h.document_id == "doc-v")
    small_store.delete("doc-v")


def test_failure_after_writing_leaves_nothing(small_store, tmp_path):
    path = write(tmp_path / "canteen.md", PUBLIC)

    def cancel_when_done(fraction, stage):  # after both stores were written
        if fraction == 1.0:
            raise RuntimeError("job cancelled")

    with pytest.raises(IngestError, match="job cancelled"):
        small_store.ingest(path, document_id="doc-2", progress=cancel_when_done)
    assert _traces(small_store, "doc-2") == (0, 0)


@pytest.mark.parametrize(
    "name, content, error",
    [
        ("bad.pdf", b"%PDF-1.7 truncated", CorruptDocument),
        ("empty.md", b"", EmptyDocument),
        ("table.xlsx", b"PK", CorruptDocument),
        ("table.ods", b"PK", UnsupportedFileType),
    ],
)
def test_bad_files_fail_clearly_and_leave_nothing(small_store, tmp_path, name, content, error):
    document_id = f"doc-3-{name}"
    small_store.ingest(write(tmp_path / "v1.md", PUBLIC), document_id=document_id)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error) as info:
        small_store.ingest(path, document_id=document_id)
    assert name in info.value.message
    assert _traces(small_store, document_id) == (0, 0)  # a failed re-ingest leaves nothing


def test_restricted_chunks_never_reach_users_without_the_group(small_store, tmp_path):
    small_store.ingest(write(tmp_path / "pub.md", PUBLIC), document_id="public-doc")
    small_store.ingest(
        write(tmp_path / "sec.md", SECRET), document_id="secret-doc", groups=["hr", "finance"]
    )
    query = "zorblax salary band principal engineers"
    vector = small_store.embedder.embed_query(query)
    searcher = HybridSearcher(
        small_store.vector_store, small_store.lexical_index, small_store.embedder
    )

    def seen(scope):
        dense = {m["document_id"] for _, _, m in small_store.vector_store.query(vector, 10, scope)}
        lexical = {
            cid.split(":")[0] for cid, _ in small_store.lexical_index.search(query, 10, scope)
        }
        hybrid = {h.document_id for h in searcher.search(query, 10, scope)}
        return dense, lexical, hybrid

    for scope in (AccessScope(frozenset()), AccessScope(frozenset({"legal"}))):
        dense, lexical, hybrid = seen(scope)
        assert "secret-doc" not in dense | lexical | hybrid
        assert "public-doc" in dense and "public-doc" in hybrid  # the query did run and find things
    for scope in (
        AccessScope(frozenset({"hr"})),
        AccessScope(frozenset({"finance", "x"})),
        AccessScope(None),
    ):
        dense, lexical, hybrid = seen(scope)
        assert "secret-doc" in dense and "secret-doc" in lexical
        assert searcher.search(query, 1, scope)[0].document_id == "secret-doc"


def test_invalid_groups_are_rejected(small_store, tmp_path):
    with pytest.raises(IngestError, match="empty"):
        small_store.ingest(write(tmp_path / "p.md", PUBLIC), document_id="doc-4", groups=[""])
    assert _traces(small_store, "doc-4") == (0, 0)
