"""Measure answer attribution on the corpus and pick its weight and threshold.

Ingests the corpus (IngestPipeline, temp dir), retrieves the ``--k`` passages the chat
would put in the prompt for every question, and builds answer/sources cases:

- supported: a gold answer against the passages retrieved for its question, when they
  hold the gold evidence (retriever.evaluation.supports);
- unrelated: the same gold answer against the passages retrieved for another question
  on another document (the answer is true, but not of these sources);
- made up: each unanswerable question stated as fact (``asserted``) against its passages;
- altered numbers: a gold answer whose numbers are changed, against its own passages.

For each lexical weight and threshold on a grid, it reports the share of supported
cases accepted (some sentence supported) and of each negative kind accepted, and picks
the pair with the best balanced accuracy among those accepting >= 95 % of supported
cases. Peers in the same run: lexical only (weight 1), MiniLM only (weight 0), and the
previous rule (a source sharing >= 3 content words and 30 % of the answer's).

Usage: python bench/attribution.py [--k 3] [--out bench/results/attribution.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# this folder holds bench/ingest.py, which would shadow the ingest package
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
for _key, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
    os.environ.setdefault(_key, _value)

from ingest.config import IngestConfig  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402
from ingest.pipeline import IngestPipeline  # noqa: E402
from ingest.stores.acl import AccessScope  # noqa: E402
from retriever import attribution  # noqa: E402
from retriever.evaluation import asserted, load_questions, search_text, supports  # noqa: E402
from retriever.followup import rewrite_query  # noqa: E402
from retriever.search import HybridSearcher  # noqa: E402
from retriever.sentences import content_words  # noqa: E402
from tests.support import corpus_dir  # noqa: E402

WEIGHTS = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)
THRESHOLDS = tuple(round(0.30 + 0.025 * i, 3) for i in range(21))
MIN_SUPPORTED_ACCEPTED = 0.95


class CachedEmbed:
    """Embeddings by text, so the grid re-scores without re-embedding."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.cache: dict[str, list[float]] = {}

    def __call__(self, texts: list[str]) -> list[list[float]]:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        for text, vector in zip(todo, self.embedder.embed_documents(todo), strict=True):
            self.cache[text] = vector
        return [self.cache[t] for t in texts]


def _alter_numbers(text: str) -> str:
    return re.sub(r"\d+", lambda m: str(int(m.group(0)) * 3 + 7), text)


def old_rule(answer: str, sources: list[str]) -> bool:
    """The previous fallback: one source shares >= 3 content words and >= 30 % of them."""
    words = content_words(answer)
    if not words:
        return False
    best = max(len(words & content_words(s)) for s in sources)
    return best >= 3 and best / len(words) >= 0.3


def build_cases(k: int, embedder: Embedder) -> tuple[list[dict], dict]:
    root = corpus_dir()
    questions = load_questions(root / "questions.jsonl")
    by_id = {q.id: q for q in questions}
    with tempfile.TemporaryDirectory() as tmp:
        config = IngestConfig(data_dir=Path(tmp))
        pipeline = IngestPipeline(config, embedder=embedder)
        started = time.perf_counter()
        for path in sorted(p for p in (root / "docs").rglob("*") if p.is_file()):
            pipeline.ingest(path, document_id=path.relative_to(root / "docs").as_posix())
        ingest_s = time.perf_counter() - started
        searcher = HybridSearcher.from_config(config, embedder=embedder)
        retrieved = {
            q.id: searcher.search(search_text(q, by_id, rewrite_query), k, AccessScope(None))
            for q in questions
        }
    cases: list[dict] = []
    answerable = [q for q in questions if q.answerable and q.answer]
    for i, q in enumerate(answerable):
        hits = retrieved[q.id]
        texts = [h.text for h in hits]
        if any(supports(q, h.document_id, h.page, h.text) for h in hits):
            cases.append({"kind": "supported", "id": q.id, "answer": q.answer, "sources": texts})
            altered = _alter_numbers(q.answer)
            if altered != q.answer:
                cases.append(
                    {"kind": "altered numbers", "id": q.id, "answer": altered, "sources": texts}
                )
        other = next(
            o
            for o in answerable[i + 1 :] + answerable[:i]
            if q.doc not in {h.document_id for h in retrieved[o.id]}
        )
        cases.append(
            {
                "kind": "unrelated",
                "id": f"{q.id}@{other.id}",
                "answer": q.answer,
                "sources": [h.text for h in retrieved[other.id]],
            }
        )
    for q in questions:
        if not q.answerable:
            cases.append(
                {
                    "kind": "made up",
                    "id": q.id,
                    "answer": asserted(q.question),
                    "sources": [h.text for h in retrieved[q.id]],
                }
            )
    return cases, {"ingest_s": round(ingest_s, 1), "questions": len(questions)}


def rates(cases: list[dict], accepted: list[bool]) -> dict[str, float]:
    kinds = sorted({c["kind"] for c in cases})
    return {
        kind: round(
            sum(a for c, a in zip(cases, accepted, strict=True) if c["kind"] == kind)
            / sum(c["kind"] == kind for c in cases),
            3,
        )
        for kind in kinds
    }


def balanced(rate: dict[str, float]) -> float:
    negatives = [v for kind, v in rate.items() if kind != "supported"]
    return round((rate["supported"] + 1 - sum(negatives) / len(negatives)) / 2, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=3, help="passages per prompt (search_k)")
    parser.add_argument("--out", default=str(REPO / "bench/results/attribution.json"))
    parser.add_argument("--cases", default=None, help="reuse (or save) the cases in this file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # more intra-op threads than free cores makes MiniLM ~10x slower
    embedder = Embedder()
    if args.cases and Path(args.cases).exists():
        cases, info = json.loads(Path(args.cases).read_text())
    else:
        cases, info = build_cases(args.k, embedder)
        if args.cases:
            Path(args.cases).write_text(json.dumps([cases, info]))
    embed = CachedEmbed(embedder)
    cache_file = Path(args.cases + ".embeddings.pkl") if args.cases else None
    if cache_file and cache_file.exists():
        embed.cache = pickle.loads(cache_file.read_bytes())
    started = time.perf_counter()
    results = {}
    for weight in WEIGHTS:
        print(f"scoring weight {weight} ({time.perf_counter() - started:.0f} s)", flush=True)
        per_case = [
            attribution.attribute(
                c["answer"], c["sources"], embed, lexical_weight=weight, threshold=0.0
            )
            for c in cases
        ]
        for threshold in THRESHOLDS:
            accepted = [
                any(s.supported and s.support >= threshold for s in a.sentences) for a in per_case
            ]
            rate = rates(cases, accepted)
            if threshold == THRESHOLDS[0]:
                reasons = {}
                for c, a in zip(cases, per_case, strict=True):
                    if c["kind"] == "supported" and not any(x.supported for x in a.sentences):
                        for x in a.sentences:
                            reasons[x.reason] = reasons.get(x.reason, 0) + 1
                print(f"weight {weight}: supported cases rejected at any threshold: {reasons}")
                if os.environ.get("ATTRIBUTION_DEBUG") and weight == 0.5:
                    for c, a in zip(cases, per_case, strict=True):
                        if c["kind"] == "supported" and not any(x.supported for x in a.sentences):
                            for x in a.sentences:
                                print(f"  {c['id']} {x.reason}: {x.sentence!r} <- {x.quote!r}")
            results[(weight, threshold)] = {"rates": rate, "balanced_accuracy": balanced(rate)}
    score_s = time.perf_counter() - started
    if cache_file:
        cache_file.write_bytes(pickle.dumps(embed.cache))
    eligible = {
        key: r for key, r in results.items() if r["rates"]["supported"] >= MIN_SUPPORTED_ACCEPTED
    }
    chosen = max(eligible, key=lambda key: (eligible[key]["balanced_accuracy"], key[1]))
    best_for = {
        name: max(
            (key for key in eligible if key[0] == weight),
            key=lambda key: eligible[key]["balanced_accuracy"],
            default=None,
        )
        for name, weight in (("lexical only", 1.0), ("MiniLM only", 0.0))
    }
    old = rates(cases, [old_rule(c["answer"], c["sources"]) for c in cases])
    report = {
        "benchmark": "answer attribution on corpus/",
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "k": args.k,
        **info,
        "cases": {
            kind: sum(c["kind"] == kind for c in cases)
            for kind in sorted({c["kind"] for c in cases})
        },
        "score_s": round(score_s, 1),
        "chosen": {"lexical_weight": chosen[0], "threshold": chosen[1], **results[chosen]},
        "current_defaults": {
            "lexical_weight": attribution.LEXICAL_WEIGHT,
            "threshold": attribution.SUPPORT_THRESHOLD,
            **results.get(
                (attribution.LEXICAL_WEIGHT, attribution.SUPPORT_THRESHOLD),
                {"rates": None},
            ),
        },
        "peers": {
            name: ({"lexical_weight": key[0], "threshold": key[1], **results[key]} if key else None)
            for name, key in best_for.items()
        }
        | {"previous rule (shared words)": {"rates": old, "balanced_accuracy": balanced(old)}},
        "grid": [
            {"lexical_weight": w, "threshold": t, **r} for (w, t), r in sorted(results.items())
        ],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"cases: {report['cases']}")
    print(f"{'variant':32} {'weight':>6} {'thresh':>6}  rates (accepted share per kind)  bal.acc")
    rows = [("chosen", report["chosen"]), ("current defaults", report["current_defaults"])]
    rows += list(report["peers"].items())
    for name, row in rows:
        if row and row.get("rates"):
            print(
                f"{name:32} {row.get('lexical_weight', '-')!s:>6} {row.get('threshold', '-')!s:>6}  "
                f"{row['rates']}  {row.get('balanced_accuracy', '-')}"
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
