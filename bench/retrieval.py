"""Retrieval quality on two corpora, each figure beside the naive baseline of the same run.

Corpora: the shared evaluation corpus (``corpus/``, the one the pipeline was built on) and
``tests/data/sourcegraph-handbook`` (another company's handbook, written questions that
nobody tuned for). For each corpus every document is parsed once; each chunking is then
embedded (an embedding cache keyed by text keeps repeated texts from being embedded
twice) and written to real stores (Chroma + FTS5) in a temporary directory, and every
question runs through ``HybridSearcher`` with each stage switched on or off:

- ``naive``: 1,000-character chunks of each document's (PDF page's) text, no sections, no
  heading prefix, BM25 + MiniLM fused by RRF (bench/ingest.py's peer);
- ``ours``: the production configuration; ``ours-…`` rows remove one stage each
  (ablation), ``chunks-N`` rows sweep the chunk size.

Metrics (retriever.evaluation's evidence rule): recall@1/5/20 over answerable questions
and MRR over the top 20 (a miss counts 0). Writes bench/results/retrieval.json.

Usage: python bench/retrieval.py [--out PATH] [--sweep NAME] [--corpus NAME] [--cache FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, bench/ is sys.path[0] and its ingest.py would shadow the ingest package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from bench.ingest import naive_chunks_of  # noqa: E402  (first: it sets the offline env)
from ingest.chunking import Chunk, ChunkingOptions, chunk_elements  # noqa: E402
from ingest.config import IngestConfig  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402
from ingest.parse import ParsedDocument, parse_document  # noqa: E402
from ingest.stores.acl import AccessScope  # noqa: E402
from ingest.stores.lexical import LexicalIndex  # noqa: E402
from ingest.stores.vector import VectorStore  # noqa: E402
from retriever.evaluation import GoldQuestion, load_questions, search_text, supports  # noqa: E402
from retriever.followup import rewrite_query  # noqa: E402
from retriever.rerank import LateInteractionReranker  # noqa: E402
from retriever.search import HybridSearcher, SearchOptions  # noqa: E402
from tests.support import corpus_dir  # noqa: E402

DEPTH = 20
SECOND_CORPUS = REPO / "tests" / "data" / "sourcegraph-handbook"


@dataclass
class Corpus:
    name: str
    root: Path
    documents: list[tuple[str, Path, ParsedDocument]]
    questions: list[GoldQuestion]


def load_corpus(name: str, root: Path) -> Corpus:
    docs = root / "docs"
    parsed = [
        (p.relative_to(docs).as_posix(), p, parse_document(p))
        for p in sorted(q for q in docs.rglob("*") if q.is_file())
    ]
    return Corpus(name, root, parsed, load_questions(root / "questions.jsonl"))


class CachedEmbedder:
    """Embeds each distinct text once per run (chunkings share most of their texts); with
    ``path``, vectors persist across runs (``--cache``) so a rerun after a search-only
    change costs no embedding."""

    def __init__(self, embedder: Embedder, path: Path | None = None) -> None:
        self.embedder = embedder
        self.path = path
        self.cache: dict[str, list[float]] = {}
        if path is not None and path.exists():
            self.cache = pickle.loads(path.read_bytes())

    def save(self) -> None:
        if self.path is not None:
            self.path.write_bytes(pickle.dumps(self.cache))

    def embed(self, texts: list[str]) -> list[list[float]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        for text, vector in zip(missing, self.embedder.embed_documents(missing), strict=True):
            self.cache[text] = vector
        return [self.cache[t] for t in texts]


Chunker = Callable[[str, Path, ParsedDocument], list[Chunk]]


def ours_chunker(options: ChunkingOptions) -> Chunker:
    def chunk(document_id: str, path: Path, parsed: ParsedDocument) -> list[Chunk]:
        return chunk_elements(
            parsed.elements,
            document_id=document_id,
            title=parsed.title or path.stem,
            options=options,
        )

    return chunk


def naive_chunker(document_id: str, path: Path, parsed: ParsedDocument) -> list[Chunk]:
    return naive_chunks_of(parsed, document_id)


@dataclass
class Index:
    vectors: VectorStore
    lexical: LexicalIndex
    chunks: int
    embed_s: float = 0.0
    extra: dict = field(default_factory=dict)


def build_index(corpus: Corpus, chunker: Chunker, embed: CachedEmbedder, where: Path) -> Index:
    config = IngestConfig(data_dir=where)
    vectors, lexical = VectorStore.from_config(config), LexicalIndex(config.lexical_path)
    total = 0
    started = time.perf_counter()
    for document_id, path, parsed in corpus.documents:
        chunks = chunker(document_id, path, parsed)
        lexical.add(chunks)
        vectors.add(chunks, embed.embed([c.index_text for c in chunks]))
        total += len(chunks)
    return Index(vectors, lexical, total, time.perf_counter() - started)


def first_supporting_rank(question: GoldQuestion, hits) -> int | None:
    for rank, hit in enumerate(hits, start=1):
        if supports(question, hit.document_id, hit.page, hit.text):
            return rank
    return None


def evaluate(corpus: Corpus, searcher: HybridSearcher) -> dict:
    """recall@1/5/20, MRR@20 and the misses at 5 of one searcher over a corpus."""
    by_id = {q.id: q for q in corpus.questions}
    scope = AccessScope(None)
    ranks: dict[str, int | None] = {}
    started = time.perf_counter()
    for q in corpus.questions:
        if not q.answerable:
            continue
        hits = searcher.search(search_text(q, by_id, rewrite_query), DEPTH, scope)
        ranks[q.id] = first_supporting_rank(q, hits)
    n = len(ranks) or 1

    def at(k: int) -> float:
        return round(sum(1 for r in ranks.values() if r is not None and r <= k) / n, 4)

    return {
        "recall_at_1": at(1),
        "recall_at_5": at(5),
        "recall_at_20": at(20),
        "mrr": round(sum(1 / r for r in ranks.values() if r) / n, 4),
        "questions": len(ranks),
        "misses_at_5": sorted(i for i, r in ranks.items() if r is None or r > 5),
        "search_ms_mean": round((time.perf_counter() - started) * 1000 / n, 1),
    }


def searcher_for(index: Index, embedder: Embedder, options: SearchOptions) -> HybridSearcher:
    return HybridSearcher(index.vectors, index.lexical, embedder, options=options)


def run_corpus(
    corpus: Corpus,
    embed: CachedEmbedder,
    sweep: bool,
    tmp: Path,
    lean: bool = False,
    rows: dict[str, dict] | None = None,
    on_row: Callable[[], None] = lambda: None,
) -> dict:
    """Every row of one corpus into ``rows`` (``on_row`` after each: a killed run keeps
    what it measured)."""
    embedder = embed.embedder
    production = ChunkingOptions()
    base = SearchOptions()
    reranker = LateInteractionReranker(embedder, cache_size=4096)
    rows = {} if rows is None else rows

    def row(name: str, index: Index, options: SearchOptions, chunking: str) -> None:
        result = evaluate(corpus, searcher_for(index, embedder, options))
        rows[name] = {"chunking": chunking, "chunks": index.chunks, **result}
        print(
            f"  {corpus.name:22} {name:24} r@1 {result['recall_at_1']:.3f}  r@5 {result['recall_at_5']:.3f}"
            f"  r@20 {result['recall_at_20']:.3f}  mrr {result['mrr']:.3f}  chunks {index.chunks}",
            flush=True,
        )
        on_row()

    naive = build_index(corpus, naive_chunker, embed, tmp / f"{corpus.name}-naive")
    embed.save()
    naive_chunking = "1000/150 chars, no sections, no prefix"
    row("naive", naive, SearchOptions(reranker=None), naive_chunking)
    if not lean:
        row("naive+rerank", naive, replace(base, reranker=reranker), naive_chunking)

    ours = build_index(corpus, ours_chunker(production), embed, tmp / f"{corpus.name}-ours")
    embed.save()
    described = production.describe()
    with_rerank = replace(base, reranker=reranker)
    row("ours", ours, with_rerank, described)
    row("ours-no-rerank", ours, base, described)
    row("ours-dense-only", ours, replace(base, lexical_weight=0.0), described)
    row("ours-lexical-only", ours, replace(base, dense_weight=0.0), described)
    ablations = (
        {}
        if lean
        else {
            "ours-no-heading-path": replace(production, heading_path=False),
            "ours-no-overlap": replace(production, overlap=0),
        }
    )
    if sweep:
        for size in (700, 1400):
            ablations[f"chunks-{size}"] = replace(production, size=size)
    for name, options in ablations.items():
        if options == production:
            continue
        index = build_index(corpus, ours_chunker(options), embed, tmp / f"{corpus.name}-{name}")
        embed.save()
        row(name, index, with_rerank, options.describe())
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrieval.json")
    parser.add_argument(
        "--sweep", action="append", default=[], help="corpus whose chunk size is also swept"
    )
    parser.add_argument(
        "--lean", action="append", default=[], help="corpus measured without re-chunked rows"
    )
    parser.add_argument("--cache", type=Path, default=None, help="file keeping embeddings")
    parser.add_argument(
        "--corpus", action="append", choices=("shared", "sourcegraph-handbook"), default=None
    )
    args = parser.parse_args()
    wanted = args.corpus or ["shared", "sourcegraph-handbook"]
    roots = {"shared": corpus_dir(), "sourcegraph-handbook": SECOND_CORPUS}
    embed = CachedEmbedder(Embedder(), args.cache)
    started = time.perf_counter()
    results: dict[str, dict] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(complete: bool) -> None:
        out = {
            "benchmark": "retrieval quality, ours vs naive and per-stage ablation",
            "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
            },
            "seconds": round(time.perf_counter() - started, 1),
            "complete": complete,
            "depth": DEPTH,
            "corpora": results,
        }
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="enclave-retrieval-") as tmp:
        for name in wanted:
            corpus = load_corpus(name, roots[name])
            results[name] = {}
            run_corpus(
                corpus,
                embed,
                name in args.sweep,
                Path(tmp),
                lean=name in args.lean,
                rows=results[name],
                on_row=lambda: write(False),
            )
            embed.save()
    write(True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
