"""The whole evaluation corpus ingested once per test session, and a shared embedder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest.config import IngestConfig
from ingest.embedder import Embedder
from ingest.pipeline import IngestPipeline
from ingest.stores.acl import AccessScope
from retriever.evaluation import GoldQuestion, RecallReport, load_questions, recall, search_text
from retriever.followup import rewrite_query
from retriever.search import HybridSearcher
from tests.support import require_corpus


@dataclass
class CorpusIndex:
    config: IngestConfig
    pipeline: IngestPipeline
    searcher: HybridSearcher
    questions: list[GoldQuestion]
    documents: list[str]
    chunks: int
    seconds: float

    def recall(self, name: str) -> RecallReport:
        """recall@1/@5 of the production searcher over this corpus's questions (printed)."""
        by_id = {q.id: q for q in self.questions}
        scope = AccessScope(None)

        def ranked(q: GoldQuestion) -> list[tuple[str, int | None, str]]:
            hits = self.searcher.search(search_text(q, by_id, rewrite_query), 5, scope)
            return [(h.document_id, h.page, h.text) for h in hits]

        report = recall(self.questions, ranked)
        print(
            f"\n{name}: recall@1 {report.recall_at_1:.3f}  recall@5 {report.recall_at_5:.3f} over "
            f"{report.questions} answerable questions; misses at 5: {report.misses}"
        )
        return report


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


SECOND_CORPUS = Path(__file__).resolve().parents[2] / "data" / "sourcegraph-handbook"


@pytest.fixture(scope="session")
def corpus_index(tmp_path_factory, embedder) -> CorpusIndex:
    return _index_corpus(require_corpus(), tmp_path_factory.mktemp("corpus_store"), embedder)


@pytest.fixture(scope="session")
def handbook_index(tmp_path_factory, embedder) -> CorpusIndex:
    """The second corpus (another company's handbook, tests/data), ingested once."""
    return _index_corpus(SECOND_CORPUS, tmp_path_factory.mktemp("handbook_store"), embedder)


def _index_corpus(root: Path, data_dir: Path, embedder: Embedder) -> CorpusIndex:
    docs = root / "docs"
    config = IngestConfig(data_dir=data_dir)
    pipeline = IngestPipeline(config, embedder=embedder)
    started = time.perf_counter()
    documents, chunks = [], 0
    for path in sorted(p for p in docs.rglob("*") if p.is_file()):
        document_id = path.relative_to(docs).as_posix()
        chunks += len(pipeline.ingest(path, document_id=document_id))
        documents.append(document_id)
    seconds = time.perf_counter() - started
    searcher = HybridSearcher.from_config(config, embedder=embedder)
    return CorpusIndex(
        config,
        pipeline,
        searcher,
        load_questions(root / "questions.jsonl"),
        documents,
        chunks,
        seconds,
    )


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, embedder) -> IngestPipeline:
    """A store apart from the corpus (sharing the loaded model) for lifecycle tests; each
    test uses its own document ids."""
    data_dir = tmp_path_factory.mktemp("lifecycle_store")
    return IngestPipeline(
        IngestConfig(data_dir=data_dir, chroma_collection="lifecycle"), embedder=embedder
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
