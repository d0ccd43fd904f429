"""Changing a document's groups rewrites both stores, narrowest first, and rolls back on failure."""

from __future__ import annotations

import pytest

from ingest.chunking import Chunk
from ingest.config import IngestConfig
from ingest.errors import IngestError
from ingest.pipeline import IngestPipeline
from ingest.stores.acl import AccessScope, narrowest_groups

DIM = 8


def _pipeline(tmp_path) -> IngestPipeline:
    """The pipeline's real stores under ``tmp_path``, one document of three chunks for hr."""
    pipeline = IngestPipeline(IngestConfig(data_dir=tmp_path, chroma_collection="acl_test"))
    chunks = [
        Chunk(f"doc:{n}", "doc", n, f"otter rota line {n}", "Otters", None, None) for n in range(3)
    ]
    pipeline.lexical_index.add(chunks, ["hr"])
    pipeline.vector_store.add(chunks, [[1.0] + [0.0] * (DIM - 1)] * 3, ["hr"])
    return pipeline


def _readable(pipeline: IngestPipeline, groups: list[str]) -> tuple[int, int]:
    scope = AccessScope.for_groups(groups)
    lexical = pipeline.lexical_index.search("otter", 10, scope)
    vector = pipeline.vector_store.query([1.0] + [0.0] * (DIM - 1), 10, scope)
    return len(lexical), len(vector)


def test_narrowest_groups_is_the_readers_of_both_sides():
    assert narrowest_groups(["hr"], []) == frozenset({"hr"})
    assert narrowest_groups([], ["finance"]) == frozenset({"finance"})
    assert narrowest_groups(["hr", "legal"], ["legal", "finance"]) == frozenset({"legal"})
    assert narrowest_groups(["hr"], ["finance"]) == frozenset()  # admins only in between
    assert narrowest_groups([], []) is None


def test_set_groups_rewrites_every_chunk_in_both_stores(tmp_path):
    pipeline = _pipeline(tmp_path)
    assert _readable(pipeline, ["hr"]) == (3, 3) and _readable(pipeline, ["finance"]) == (0, 0)
    assert pipeline.set_groups("doc", ["hr"], ["finance"]) == 3
    assert _readable(pipeline, ["hr"]) == (0, 0) and _readable(pipeline, ["finance"]) == (3, 3)
    pipeline.set_groups("doc", ["finance"], [])
    assert _readable(pipeline, []) == (3, 3)


def test_a_failing_store_puts_both_back_and_no_step_widens_access(tmp_path, monkeypatch):
    pipeline = _pipeline(tmp_path)
    vector = pipeline.vector_store
    original = vector.set_acl
    seen: list[dict] = []

    def failing_second_write(document_id, acl):
        seen.append(acl)
        if len(seen) == 2:
            raise RuntimeError("chroma went away")
        return original(document_id, acl)

    monkeypatch.setattr(vector, "set_acl", failing_second_write)
    with pytest.raises(IngestError):
        pipeline.set_groups("doc", ["hr"], ["finance"])
    assert seen[0] == {"public": False}  # hr -> finance passes through "admins only"
    monkeypatch.setattr(vector, "set_acl", original)
    assert _readable(pipeline, ["hr"]) == (3, 3) and _readable(pipeline, ["finance"]) == (0, 0)
