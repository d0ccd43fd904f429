"""A whole ingest + search round trip makes no outbound connection attempt.

Same guard as tests/unit/ingest/test_offline.py (fresh interpreter; DNS lookups and
connects to non-loopback addresses are recorded and refused), now around the embedder
(sentence-transformers / HF hub), Chroma (telemetry) and the parsers together.
"""

from __future__ import annotations

import pytest

from tests.unit.ingest.test_offline import _run

pytestmark = pytest.mark.slow


def test_ingest_and_search_make_no_connection_attempt(tmp_path):
    md = tmp_path / "leave.md"
    md.write_text(
        "# Leave\n\n## Award leave\n\nAward leave expires one year after it is issued.\n",
        encoding="utf-8",
    )
    result = _run(
        """
        from pathlib import Path
        from ingest.config import IngestConfig
        from ingest.pipeline import IngestPipeline
        from ingest.stores.acl import AccessScope
        from retriever.search import HybridSearcher
        config = IngestConfig(data_dir=Path(FILES["data"]))
        pipeline = IngestPipeline(config)
        chunks = pipeline.ingest(Path(FILES["md"]), document_id="leave", groups=["hr"])
        searcher = HybridSearcher.from_config(config, embedder=pipeline.embedder)
        hits = searcher.search("When does award leave expire?", 3, AccessScope(frozenset({"hr"})))
        pipeline.delete("leave")
        out = {"chunks": len(chunks), "hits": [h.document_id for h in hits], "left": pipeline.vector_store.count()}
        """,
        {"md": str(md), "data": str(tmp_path / "data")},
    )
    assert result["out"] == {"chunks": 1, "hits": ["leave"], "left": 0}
    assert result["attempts"] == []
