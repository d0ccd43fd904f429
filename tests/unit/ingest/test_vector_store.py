"""Chroma store: ACL filter inside the query, deletes, counts (real Chroma, synthetic vectors)."""

from __future__ import annotations

import pytest

from ingest.chunking import Chunk
from ingest.stores.acl import AccessScope
from ingest.stores.vector import VectorStore

DIM = 8


def _vec(i: int) -> list[float]:
    v = [0.01] * DIM
    v[i % DIM] = 1.0
    return v


def _chunk(doc, n, page=None):
    return Chunk(f"{doc}:{n}", doc, n, f"text {doc} {n}", "T", page, None)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    vs = VectorStore(
        mode="embedded", path=tmp_path_factory.mktemp("chroma"), collection="test_chunks"
    )
    vs.add([_chunk("pub", 0, page=3), _chunk("pub", 1)], [_vec(0), _vec(1)], groups=[])
    vs.add([_chunk("hr", 0)], [_vec(0)], groups=["hr"])
    vs.add([_chunk("legal", 0)], [_vec(0)], groups=["legal", "hr"])
    return vs


def test_restricted_vectors_never_returned_without_the_group(store):
    near = _vec(0)
    assert {c for c, _, _ in store.query(near, 10, AccessScope(frozenset()))} == {"pub:0", "pub:1"}
    assert {c for c, _, _ in store.query(near, 10, AccessScope(frozenset({"legal"})))} == {
        "pub:0",
        "pub:1",
        "legal:0",
    }
    assert {c for c, _, _ in store.query(near, 10, AccessScope(frozenset({"hr"})))} == {
        "pub:0",
        "pub:1",
        "hr:0",
        "legal:0",
    }
    assert len(store.query(near, 10, AccessScope(None))) == 4


def test_query_returns_cosine_distance_and_metadata(store):
    hits = store.query(_vec(0), 1, AccessScope(frozenset()))
    chunk_id, distance, meta = hits[0]
    assert chunk_id == "pub:0" and distance == pytest.approx(0.0, abs=1e-3)
    assert meta["document_id"] == "pub" and meta["page"] == 3 and meta["public"] is True


def test_delete_document(tmp_path):
    vs = VectorStore(mode="embedded", path=tmp_path / "c", collection="del_chunks")
    vs.add([_chunk("a", 0), _chunk("a", 1), _chunk("b", 0)], [_vec(0), _vec(1), _vec(2)])
    vs.delete_document("a")
    vs.delete_document("a")
    assert (
        vs.count() == 1
        and vs.document_chunk_ids("a") == []
        and vs.document_chunk_ids("b") == ["b:0"]
    )
