"""Retrieval quality on two corpora in one run, each figure beside the naive baseline.

Corpora: the shared evaluation corpus (``corpus/``, the one the pipeline was built on) and
``tests/data/sourcegraph-handbook`` (another company's handbook, written questions that
nobody tuned for). Every document is parsed once; each chunking is embedded once and
written to real stores (Chroma + FTS5) in a temporary directory; every question then runs
through ``HybridSearcher`` with each stage switched on or off. Rows, per corpus:

- ``naive``: 1,000/150-character chunks of each document's (PDF page's) text, no sections,
  no heading prefix, BM25 + MiniLM fused by RRF, no rerank (bench/ingest.py's peer), and
  ``naive+rerank``;
- ``size-N`` / ``size-N+rerank``: our chunking (sections/pages, heading path) at N
  characters with a 15 % overlap, fused, without and with the late-interaction rerank:
  the sweep that chooses the default size and whether the rerank stays;
- ``ours``: the production configuration (ingest/chunking.py and services/settings.py
  defaults), and ``ours-…`` rows that change one stage each: no heading path, no overlap,
  no structure (naive chunks at our size), dense only, lexical only, rerank switched, and
  parent-child (small chunks matched, the production chunk holding each one returned).

The ``choice`` block ranks the size/rerank rows by the worse of the two corpora's recall@5,
then the worse MRR: the rule the defaults are chosen by (docs/decisions.md).

Metrics (retriever.evaluation's evidence rule): recall@1/5/20 over answerable questions and
MRR over the top 20 (a miss counts 0). Writes bench/results/retrieval.json.

Everything the model computes (parses, chunk and query vectors, rerank scores) is cached
by content in ``--cache`` (default: a file in the system temp folder), so a second run, or
one after a change to a single stage, costs only the rows that changed.

Usage: python bench/retrieval.py [--out PATH] [--corpus NAME] [--cache FILE]
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
from retriever.evaluation import GoldQuestion, load_questions, search_text, supports, words  # noqa: E402
from retriever.followup import rewrite_query  # noqa: E402
from retriever.rerank import LateInteractionReranker  # noqa: E402
from retriever.search import HybridSearcher, SearchHit, SearchOptions  # noqa: E402
from services.settings import Settings  # noqa: E402
from tests.support import corpus_dir  # noqa: E402

DEPTH = 20
SECOND_CORPUS = REPO / "tests" / "data" / "sourcegraph-handbook"
CORPORA = ("shared", "sourcegraph-handbook")
# Swept chunk sizes, each with a 15 % overlap (the production ratio, 150 of 1,000).
SIZES = (500, 700, 1000, 1400)
# Parent-child: the smallest swept chunks are matched, the production chunk holding each
# is returned (no extra embedding: that chunking is already indexed for the sweep).
CHILD = ChunkingOptions(size=SIZES[0], overlap=SIZES[0] * 15 // 100)


def overlap_for(size: int) -> int:
    return size * 15 // 100


@dataclass
class Corpus:
    name: str
    root: Path
    documents: list[tuple[str, Path, ParsedDocument]]
    questions: list[GoldQuestion]


class ModelCache:
    """Parses, chunk/query vectors and rerank scores keyed by their inputs, kept in one
    pickle between runs (vectors also under the model's path, so another model misses)."""

    def __init__(self, embedder: Embedder, path: Path | None) -> None:
        self.embedder = embedder
        self.path = path
        data: dict[str, Any] = {}
        if path is not None and path.exists():
            data = pickle.loads(path.read_bytes())
        if data.get("model") != embedder.model_path:
            data = {"model": embedder.model_path}
        self.vectors: dict[str, list[float]] = data.setdefault("vectors", {})
        self.rerank: dict[tuple[str, str, str], float] = data.setdefault("rerank", {})
        self.parses: dict[tuple[str, int, int], ParsedDocument] = data.setdefault("parses", {})
        self.data = data

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(self.data))
            tmp.replace(self.path)

    def parse(self, path: Path) -> ParsedDocument:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self.parses:
            self.parses[key] = parse_document(path)
        return self.parses[key]

    # The embedder interface HybridSearcher uses (documents and queries share one cache).
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        for text, vector in zip(missing, self.embedder.embed_documents(missing), strict=True):
            self.vectors[text] = vector
        return [self.vectors[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def pin_threads(self, count: int) -> None:
        self.embedder.pin_threads(count)


class CachedReranker:
    """The production reranker with its scores remembered per (query, heading, text)."""

    def __init__(self, inner: LateInteractionReranker, scores: dict) -> None:
        self.inner = inner
        self.cache = scores

    def scores(self, query: str, passages: list[tuple[str, str]]) -> list[float]:
        keys = [(query, h, t) for h, t in passages]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            fresh = self.inner.scores(query, [passages[i] for i in missing])
            for i, score in zip(missing, fresh, strict=True):
                self.cache[keys[i]] = score
        return [self.cache[key] for key in keys]


def load_corpus(name: str, root: Path, cache: ModelCache) -> Corpus:
    docs = root / "docs"
    parsed = [
        (p.relative_to(docs).as_posix(), p, cache.parse(p))
        for p in sorted(q for q in docs.rglob("*") if q.is_file())
    ]
    return Corpus(name, root, parsed, load_questions(root / "questions.jsonl"))


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


def naive_chunker(size: int = 1000, overlap: int = 150) -> Chunker:
    def chunk(document_id: str, path: Path, parsed: ParsedDocument) -> list[Chunk]:
        return naive_chunks_of(parsed, document_id, size=size, overlap=overlap)

    return chunk


@dataclass
class Index:
    vectors: VectorStore
    lexical: LexicalIndex
    chunks: list[Chunk]
    described: str


def build_index(
    corpus: Corpus, chunker: Chunker, cache: ModelCache, where: Path, described: str
) -> Index:
    config = IngestConfig(data_dir=where)
    vectors, lexical = VectorStore.from_config(config), LexicalIndex(config.lexical_path)
    every: list[Chunk] = []
    for document_id, path, parsed in corpus.documents:
        chunks = chunker(document_id, path, parsed)
        lexical.add(chunks)
        vectors.add(chunks, cache.embed_documents([c.index_text for c in chunks]))
        every.extend(chunks)
    cache.save()
    return Index(vectors, lexical, every, described)


class Searcher:
    """What evaluate() needs: the k best hits for a query."""

    def search(self, query: str, k: int, scope: AccessScope) -> list[SearchHit]: ...


class ParentChildSearcher(Searcher):
    """Match small chunks, return the larger chunk that holds each (first rank wins)."""

    def __init__(self, children: HybridSearcher, parent_of: dict[str, Chunk]) -> None:
        self.children = children
        self.parent_of = parent_of

    def search(self, query: str, k: int, scope: AccessScope) -> list[SearchHit]:
        out: list[SearchHit] = []
        seen: set[str] = set()
        for hit in self.children.search(query, 3 * k, scope):
            parent = self.parent_of[hit.chunk_id]
            if parent.chunk_id in seen:
                continue
            seen.add(parent.chunk_id)
            out.append(
                SearchHit(
                    parent.chunk_id,
                    parent.document_id,
                    parent.title,
                    parent.page,
                    parent.section,
                    parent.text,
                    hit.score,
                )
            )
            if len(out) == k:
                break
        return out


def parents_of(children: list[Chunk], parents: list[Chunk]) -> dict[str, Chunk]:
    """Each child's parent: the chunk of the same document and page sharing most of its words."""
    by_page: dict[tuple[str, int | None], list[tuple[Chunk, Counter]]] = {}
    for parent in parents:
        by_page.setdefault((parent.document_id, parent.page), []).append(
            (parent, Counter(words(parent.text)))
        )
    out = {}
    for child in children:
        wanted = Counter(words(child.text))
        candidates = by_page[(child.document_id, child.page)]
        out[child.chunk_id] = max(candidates, key=lambda pair: sum((wanted & pair[1]).values()))[0]
    return out


def first_supporting_rank(question: GoldQuestion, hits: list[SearchHit]) -> int | None:
    for rank, hit in enumerate(hits, start=1):
        if supports(question, hit.document_id, hit.page, hit.text):
            return rank
    return None


def evaluate(corpus: Corpus, searcher: Searcher) -> dict:
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
        "recall_at_3": at(3),  # the chat's default search_k: what the prompt holds
        "recall_at_5": at(5),
        "recall_at_20": at(20),
        "mrr": round(sum(1 / r for r in ranks.values() if r) / n, 4),
        "questions": len(ranks),
        "misses_at_5": sorted(i for i, r in ranks.items() if r is None or r > 5),
        "search_ms_mean": round((time.perf_counter() - started) * 1000 / n, 1),
    }


def unreachable(corpus: Corpus, chunks: list[Chunk]) -> list[str]:
    """Answerable questions whose evidence no single chunk holds (cut by a boundary, or
    spread over sections): no ranking can find them in this chunking."""
    by_document: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        by_document.setdefault(chunk.document_id, []).append(chunk)
    return sorted(
        q.id
        for q in corpus.questions
        if q.answerable
        and not any(
            supports(q, c.document_id, c.page, c.text) for c in by_document.get(q.doc or "", [])
        )
    )


def production() -> tuple[ChunkingOptions, bool]:
    """The shipped chunking and whether the shipped searcher reranks."""
    settings = Settings.model_fields
    options = ChunkingOptions(
        size=settings["chunk_size"].default, overlap=settings["chunk_overlap"].default
    )
    return options, bool(settings["rerank"].default)


def run_corpus(
    corpus: Corpus,
    cache: ModelCache,
    tmp: Path,
    rows: dict[str, dict],
    on_row: Callable[[], None] = lambda: None,
) -> None:
    """Every row of one corpus into ``rows`` (``on_row`` after each: a killed run keeps
    what it measured)."""
    shipped, shipped_rerank = production()
    reranker = CachedReranker(
        LateInteractionReranker(cache.embedder, cache_size=4096), cache.rerank
    )
    fused = SearchOptions(reranker=None)
    reranked = replace(fused, reranker=reranker)
    ours = reranked if shipped_rerank else fused
    indexes: dict[str, Index] = {}

    def index(name: str, chunker: Chunker, described: str) -> Index:
        if name not in indexes:
            indexes[name] = build_index(
                corpus, chunker, cache, tmp / f"{corpus.name}-{name}", described
            )
        return indexes[name]

    def searcher(ix: Index, options: SearchOptions) -> HybridSearcher:
        return HybridSearcher(ix.vectors, ix.lexical, cache, options=options, batch_queries=False)  # type: ignore[arg-type]

    def row(name: str, ix: Index, search: Searcher, stages: str) -> None:
        result = evaluate(corpus, search)
        rows[name] = {
            "chunking": ix.described,
            "stages": stages,
            "chunks": len(ix.chunks),
            **result,
            "unreachable": unreachable(corpus, ix.chunks),
        }
        cache.save()
        print(
            f"  {corpus.name:20} {name:22} r@1 {result['recall_at_1']:.3f}  r@5 {result['recall_at_5']:.3f}"
            f"  r@20 {result['recall_at_20']:.3f}  mrr {result['mrr']:.3f}  chunks {len(ix.chunks)}",
            flush=True,
        )
        on_row()

    def chunking(options: ChunkingOptions) -> Index:
        key = f"{options.size}-{options.overlap}-{'h' if options.heading_path else 'bare'}"
        return index(key, ours_chunker(options), options.describe())

    def flat(size: int, overlap: int) -> Index:
        described = f"{size}/{overlap} chars, no sections, no heading path"
        return index(f"flat-{size}-{overlap}", naive_chunker(size, overlap), described)

    naive = flat(1000, 150)
    row("naive", naive, searcher(naive, fused), "dense+lexical RRF")
    row("naive+rerank", naive, searcher(naive, reranked), "dense+lexical RRF, rerank")
    for size in SIZES:
        ix = chunking(ChunkingOptions(size=size, overlap=overlap_for(size)))
        row(f"size-{size}", ix, searcher(ix, fused), "dense+lexical RRF")
        row(f"size-{size}+rerank", ix, searcher(ix, reranked), "dense+lexical RRF, rerank")

    stages = "dense+lexical RRF" + (", rerank" if shipped_rerank else "")
    base = chunking(shipped)
    row("ours", base, searcher(base, ours), stages)
    switched = fused if shipped_rerank else reranked
    row(
        "ours-no-rerank" if shipped_rerank else "ours+rerank",
        base,
        searcher(base, switched),
        "dense+lexical RRF" + ("" if shipped_rerank else ", rerank"),
    )
    row("ours-dense-only", base, searcher(base, replace(ours, lexical_weight=0.0)), "dense")
    row("ours-lexical-only", base, searcher(base, replace(ours, dense_weight=0.0)), "lexical")
    for name, options in (
        ("ours-no-heading-path", replace(shipped, heading_path=False)),
        ("ours-no-overlap", replace(shipped, overlap=0)),
    ):
        ix = chunking(options)
        row(name, ix, searcher(ix, ours), stages)
    structureless = flat(shipped.size, shipped.overlap)
    row("ours-no-structure", structureless, searcher(structureless, ours), stages)
    if CHILD.size >= shipped.size:
        return
    children = chunking(CHILD)
    parent_child = ParentChildSearcher(
        searcher(children, ours), parents_of(children.chunks, base.chunks)
    )
    row(
        "ours-parent-child",
        Index(base.vectors, base.lexical, base.chunks, f"match {CHILD.describe()}; return ours"),
        parent_child,
        stages,
    )


def choose(results: dict[str, dict]) -> list[dict]:
    """Size/rerank configurations ranked by the worse corpus's recall@5, then worse MRR."""
    names = [n for n in next(iter(results.values())) if n.startswith("size-")]
    ranked = []
    for name in names:
        if not all(name in rows for rows in results.values()):
            continue
        ranked.append(
            {
                "config": name,
                "min_recall_at_5": min(rows[name]["recall_at_5"] for rows in results.values()),
                "min_mrr": min(rows[name]["mrr"] for rows in results.values()),
                **{f"{c}_recall_at_5": rows[name]["recall_at_5"] for c, rows in results.items()},
                **{f"{c}_mrr": rows[name]["mrr"] for c, rows in results.items()},
            }
        )
    return sorted(ranked, key=lambda r: (-r["min_recall_at_5"], -r["min_mrr"]))


def table(results: dict[str, dict]) -> str:
    """One line per row, the corpora side by side (recall@1/5/20 and MRR)."""
    corpora = list(results)
    header = f"{'row':22}" + "".join(f" | {c[:20]:20} r@1   r@5   r@20  MRR  " for c in corpora)
    lines = [header, "-" * len(header)]
    for name in dict.fromkeys(n for rows in results.values() for n in rows):
        cells = []
        for c in corpora:
            r = results[c].get(name)
            cells.append(
                f" | {'':20} {r['recall_at_1']:.3f} {r['recall_at_5']:.3f} {r['recall_at_20']:.3f} {r['mrr']:.3f}"
                if r
                else f" | {'':20} {'-':>5} {'-':>5} {'-':>5} {'-':>5}"
            )
        lines.append(f"{name:22}" + "".join(cells))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrieval.json")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "enclave-retrieval-bench.pkl",
        help="file keeping parses, embeddings and rerank scores between runs",
    )
    parser.add_argument("--corpus", action="append", choices=CORPORA, default=None)
    args = parser.parse_args()
    wanted = args.corpus or list(CORPORA)
    roots = {"shared": corpus_dir(), "sourcegraph-handbook": SECOND_CORPUS}
    import torch

    # One intra-op thread: on two shared cores a second one makes MiniLM several times slower
    # (tests/torch_threads.py).
    torch.set_num_threads(1)
    cache = ModelCache(Embedder(), args.cache)
    started = time.perf_counter()
    results: dict[str, dict] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shipped, shipped_rerank = production()
    command = "python bench/retrieval.py" + "".join(f" --corpus {c}" for c in args.corpus or [])

    def write(complete: bool) -> None:
        out = {
            "benchmark": "retrieval quality: naive baseline, chunk-size sweep, per-stage ablation",
            "command": command,
            "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
            },
            "seconds": round(time.perf_counter() - started, 1),
            "complete": complete,
            "depth": DEPTH,
            "production": {"chunking": shipped.describe(), "rerank": shipped_rerank},
            "choice_rule": "max over size rows of min(recall@5 over corpora), then min(MRR)",
            "choice": choose(results) if complete and len(results) > 1 else [],
            "corpora": results,
        }
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="enclave-retrieval-") as tmp:
        for name in wanted:
            corpus = load_corpus(name, roots[name], cache)
            cache.save()
            results[name] = {}
            run_corpus(corpus, cache, Path(tmp), results[name], on_row=lambda: write(False))
    write(True)
    print("\n" + table(results))
    if len(results) > 1:
        print("\nby the worse corpus (recall@5, then MRR):")
        for r in choose(results):
            print(
                f"  {r['config']:18} min r@5 {r['min_recall_at_5']:.3f}  min MRR {r['min_mrr']:.3f}"
            )
    print(
        f"\n{command}: {time.perf_counter() - started:.0f} s, wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
