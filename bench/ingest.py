"""Benchmark ingestion and hybrid retrieval on the evaluation corpus against a naive peer.

Ingests every document of the corpus with IngestPipeline into a temporary directory
(documents/min, chunks/s), runs every corpus question through HybridSearcher (p50/p95
latency, recall@1/@5 by retriever.evaluation's evidence rule), and in the same run
builds the naive peer: 1,000-character chunks of each document's (or PDF page's) text
with no section grouping and no heading prefix, embedded and indexed in the same stores
and fused by the same RRF. The two alternate per document and per question, so a busy
machine slows both alike; CPU seconds are reported beside wall seconds for the same
reason. Prints a table and writes bench/results/ingest.json.

Usage: python bench/ingest.py [--out bench/results/ingest.json] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

from ingest.chunking import Chunk, make_chunk_id  # noqa: E402
from ingest.config import IngestConfig  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402
from ingest.parse import ParsedDocument, parse_document  # noqa: E402
from ingest.pipeline import IngestPipeline  # noqa: E402
from ingest.stores.acl import AccessScope  # noqa: E402
from ingest.stores.lexical import LexicalIndex  # noqa: E402
from ingest.stores.vector import VectorStore  # noqa: E402
from retriever.evaluation import load_questions, recall, search_text  # noqa: E402
from retriever.followup import rewrite_query  # noqa: E402
from retriever.search import HybridSearcher  # noqa: E402
from tests.support import corpus_dir  # noqa: E402

NAIVE_CHUNK, NAIVE_OVERLAP = 1000, 150


def _documents(docs: Path) -> list[Path]:
    return sorted(p for p in docs.rglob("*") if p.is_file())


def naive_chunks(path: Path, document_id: str) -> list[Chunk]:
    """The peer: one text per document (per page for PDFs), split at 1,000 characters."""
    return naive_chunks_of(parse_document(path), document_id)


def naive_chunks_of(
    parsed: ParsedDocument, document_id: str, size: int = NAIVE_CHUNK, overlap: int = NAIVE_OVERLAP
) -> list[Chunk]:
    """The peer's chunks of an already parsed document (bench/retrieval.py reuses parses and
    also cuts them at other sizes: structure-blind chunks of our size)."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)
    pages: dict[int | None, list[str]] = {}
    for element in parsed.elements:
        pages.setdefault(element.page, []).append(element.text)
    if parsed.title:
        pages.setdefault(next(iter(pages), None), []).insert(0, parsed.title)
    out: list[Chunk] = []
    for page, texts in pages.items():
        for piece in splitter.split_text("\n\n".join(texts)):
            out.append(
                Chunk(
                    make_chunk_id(document_id, len(out)),
                    document_id,
                    len(out),
                    piece,
                    "",
                    page,
                    None,
                )
            )
    return out


def warm_up(docs: Path, embedder: Embedder) -> None:
    """Load the embedding model, spaCy and each format's parser before anything is timed."""
    embedder.embed_query("warm up")
    seen: set[str] = set()
    for path in _documents(docs):
        if path.suffix.lower() not in seen:
            seen.add(path.suffix.lower())
            parse_document(path)


class Timer:
    """Accumulated wall-clock and CPU seconds of this process over the ``with`` blocks it
    times (CPU is less disturbed by a busy machine)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def ingest_both(docs: Path, ours_cfg: IngestConfig, naive_cfg: IngestConfig, embedder: Embedder):
    """Ingest every document into ours and the naive peer, alternating per document so a
    change in machine load hits both alike."""
    pipeline = IngestPipeline(ours_cfg, embedder=embedder)
    vectors, lexical = VectorStore.from_config(naive_cfg), LexicalIndex(naive_cfg.lexical_path)
    ours_t, naive_t = Timer(), Timer()
    ours_chunks = naive_total = 0
    for path in _documents(docs):
        document_id = path.relative_to(docs).as_posix()
        with ours_t:
            ours_chunks += len(pipeline.ingest(path, document_id=document_id))
        with naive_t:
            chunks = naive_chunks(path, document_id)
            lexical.add(chunks)
            vectors.add(chunks, embedder.embed_documents([c.text for c in chunks]))
            naive_total += len(chunks)
    ours = HybridSearcher(pipeline.vector_store, pipeline.lexical_index, embedder)
    naive = HybridSearcher(vectors, lexical, embedder)
    return (ours, ours_chunks, ours_t), (naive, naive_total, naive_t)


def evaluate(searchers: list[HybridSearcher], questions) -> list[dict]:
    """Every question through every searcher, alternating per question (fair timing)."""
    by_id = {q.id: q for q in questions}
    scope = AccessScope(None)
    for searcher in searchers:  # first query opens the collection and loads its index
        searcher.search("warm up", 5, scope)
    latencies: list[list[float]] = [[] for _ in searchers]
    results: list[dict[str, list]] = [{} for _ in searchers]
    for q in questions:
        query = search_text(q, by_id, rewrite_query)
        for i, searcher in enumerate(searchers):
            started = time.perf_counter()
            hits = searcher.search(query, 5, scope)
            latencies[i].append((time.perf_counter() - started) * 1000)
            results[i][q.id] = [(h.document_id, h.page, h.text) for h in hits]
    out = []
    for i in range(len(searchers)):
        report = recall(questions, lambda q, i=i: results[i][q.id])
        ms = sorted(latencies[i])
        out.append(
            {
                "recall_at_1": round(report.recall_at_1, 4),
                "recall_at_5": round(report.recall_at_5, 4),
                "answerable_questions": report.questions,
                "misses_at_5": report.misses,
                "search_p50_ms": round(statistics.median(ms), 1),
                "search_p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
                "searches": len(ms),
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ingest.json")
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args()
    root = args.corpus or corpus_dir()
    docs, questions = root / "docs", load_questions(root / "questions.jsonl")
    n_docs = len(_documents(docs))
    load_at_start = round(os.getloadavg()[0], 2)

    embedder = Embedder()
    warm_up(docs, embedder)  # model and parser loading is not ingestion throughput
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as tmp:
        ours_cfg, naive_cfg = (
            IngestConfig(data_dir=Path(tmp) / "ours"),
            IngestConfig(data_dir=Path(tmp) / "naive"),
        )
        (ours_s, ours_chunks, ours_t), (naive_s, naive_chunk_count, naive_t) = ingest_both(
            docs, ours_cfg, naive_cfg, embedder
        )
        ours_eval, naive_eval = evaluate([ours_s, naive_s], questions)

    def block(chunks: int, timer: Timer, evaluation: dict) -> dict:
        return {
            "documents": n_docs,
            "chunks": chunks,
            "ingest_s": round(timer.wall, 1),
            "ingest_cpu_s": round(timer.cpu, 1),
            "documents_per_min": round(n_docs / timer.wall * 60, 1),
            "chunks_per_s": round(chunks / timer.wall, 2),
            **evaluation,
        }

    ours, naive = (
        block(ours_chunks, ours_t, ours_eval),
        block(naive_chunk_count, naive_t, naive_eval),
    )
    result = {
        "benchmark": "ingest+retrieval on corpus/",
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m_at_start": load_at_start,
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "ours": {
            "chunking": f"sections/pages, {ours_cfg.chunk_size}/{ours_cfg.chunk_overlap} chars, heading prefix",
            **ours,
        },
        "naive": {
            "chunking": f"{NAIVE_CHUNK}/{NAIVE_OVERLAP} chars, no sections, no prefix",
            **naive,
        },
        "ratios_ours_over_naive": {
            "recall_at_1": round(ours["recall_at_1"] / max(naive["recall_at_1"], 1e-9), 3),
            "recall_at_5": round(ours["recall_at_5"] / max(naive["recall_at_5"], 1e-9), 3),
            "documents_per_min": round(ours["documents_per_min"] / naive["documents_per_min"], 3),
            "search_p50": round(ours["search_p50_ms"] / naive["search_p50_ms"], 3),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    rows = [("", "ours", "naive", "ours/naive")]
    for key in (
        "documents",
        "chunks",
        "ingest_s",
        "ingest_cpu_s",
        "documents_per_min",
        "chunks_per_s",
        "search_p50_ms",
        "search_p95_ms",
        "recall_at_1",
        "recall_at_5",
    ):
        ratio = ours[key] / naive[key] if naive[key] else float("nan")
        rows.append((key, str(ours[key]), str(naive[key]), f"{ratio:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
    print(f"misses@5 ours: {ours['misses_at_5']}  naive: {naive['misses_at_5']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
