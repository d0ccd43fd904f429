"""Score whole answers against the gold questions: retrieval, citations, refusals, answer F1.

``AnsweredQuestion`` is what one turn produced, however it was obtained (in process by
``answer_all``, or from a running gateway by ``enclave eval --url``); ``score`` turns a
list of them into the metrics below, each a share in 0..1 (MRR a mean reciprocal rank):

| metric | over | counts |
|---|---|---|
| recall_at_1/5/20, mrr | answerable | a retrieved chunk holds the evidence (``supports``) |
| citation_precision | citations of answered answerable questions | the cited chunk holds the evidence |
| citation_recall | answerable | the gold document is cited |
| page_accuracy | answerable, gold in a PDF | a citation names the gold document and page |
| refusal_accuracy | unanswerable | the answer is the decline |
| false_refusals | answerable | the answer is the decline (lower is better) |
| follow_up_accuracy | follow-ups | answered, citing the gold document |
| answer_f1 | answerable | SQuAD token F1 of the answer against the gold answer |
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from retriever.attribution import EmbedTexts
from retriever.citations import ground_answer
from retriever.evaluation import GoldQuestion, asserted, normalise, supports
from retriever.followup import rewrite_query
from retriever.prompt import compose_prompt
from retriever.sentence_vectors import SentenceVectorCache

RECALL_DEPTH = 20

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")


@dataclass
class AnsweredQuestion:
    """One question's turn: what retrieval ranked, what the user was shown."""

    question: GoldQuestion
    ranked: list[tuple[str, int | None, str]]  # (document id, page, text), best first
    answer: str
    declined: bool
    citations: list[dict]  # document_id, page, quote
    sources: list[dict]  # document_id, page, text
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def answer_tokens(text: str) -> list[str]:
    """SQuAD normalisation: lower case, no punctuation or articles, split on space."""
    return _ARTICLES.sub(" ", _PUNCTUATION.sub(" ", normalise(text))).split()


def token_f1(answer: str, gold: str) -> float:
    """Harmonic mean of token precision and recall (multiset overlap), 0..1."""
    predicted, expected = answer_tokens(answer), answer_tokens(gold)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not predicted or not expected or not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _first_supporting_rank(item: AnsweredQuestion) -> int | None:
    for rank, (document_id, page, text) in enumerate(item.ranked[:RECALL_DEPTH], start=1):
        if supports(item.question, document_id, page, text):
            return rank
    return None


def cited_chunk_text(citation: dict, sources: Sequence[dict]) -> str:
    """The text of the source a citation points at (same document and page, holds the quote)."""
    for source in sources:
        if (
            source["document_id"] == citation["document_id"]
            and source.get("page") == citation.get("page")
            and (citation.get("quote") or "") in source["text"]
        ):
            return source["text"]
    return citation.get("quote") or ""


def _share(hits: Sequence[bool] | Sequence[float]) -> float | None:
    """The mean of ``hits`` (booleans count as 0/1), rounded; None when there is nothing to count."""
    return round(sum(hits) / len(hits), 4) if hits else None


def score(results: Sequence[AnsweredQuestion]) -> dict[str, float | int | None]:
    """The metrics of the module docstring (None where a metric has nothing to count)."""
    answerable = [r for r in results if r.question.answerable]
    unanswerable = [r for r in results if not r.question.answerable]
    ranks = [_first_supporting_rank(r) for r in answerable]
    precision_hits = [
        supports(r.question, c["document_id"], c.get("page"), cited_chunk_text(c, r.sources))
        for r in answerable
        if not r.declined
        for c in r.citations
    ]
    cites_gold = [
        not r.declined and any(c["document_id"] == r.question.doc for c in r.citations)
        for r in answerable
    ]
    pdf = [r for r in answerable if (r.question.doc or "").lower().endswith(".pdf")]
    return {
        "questions": len(results),
        "answerable": len(answerable),
        "recall_at_1": _share([rank is not None and rank <= 1 for rank in ranks]),
        "recall_at_5": _share([rank is not None and rank <= 5 for rank in ranks]),
        "recall_at_20": _share([rank is not None for rank in ranks]),
        "mrr": round(sum(1 / rank for rank in ranks if rank) / len(ranks), 4) if ranks else None,
        "citation_precision": _share(precision_hits),
        "citation_recall": _share(cites_gold),
        "page_accuracy": _share(
            [
                any(
                    c["document_id"] == r.question.doc and c.get("page") == r.question.page
                    for c in r.citations
                )
                for r in pdf
            ]
        ),
        "refusal_accuracy": _share([r.declined for r in unanswerable]),
        "false_refusals": _share([r.declined for r in answerable]),
        "follow_up_accuracy": _share(
            [hit for r, hit in zip(answerable, cites_gold, strict=True) if r.question.follow_up_of]
        ),
        "answer_f1": _share(
            [0.0 if r.declined else token_f1(r.answer, r.question.answer or "") for r in answerable]
        ),
        "seconds_per_question": round(sum(r.seconds for r in results) / len(results), 2)
        if results
        else None,
    }


METRIC_ORDER = (
    "recall_at_1",
    "recall_at_5",
    "recall_at_20",
    "mrr",
    "citation_precision",
    "citation_recall",
    "page_accuracy",
    "refusal_accuracy",
    "false_refusals",
    "follow_up_accuracy",
    "answer_f1",
    "seconds_per_question",
)


def table(metrics: dict[str, float | int | None]) -> str:
    """The metrics as a two-column text table, in a fixed order."""
    lines = [f"{'metric':<22}{'value':>8}", "-" * 30]
    for name in METRIC_ORDER:
        value = metrics.get(name)
        lines.append(f"{name:<22}{'-' if value is None else f'{value:.3f}':>8}")
    lines.append(f"({metrics.get('questions')} questions, {metrics.get('answerable')} answerable)")
    return "\n".join(lines)


def history_for(
    question: GoldQuestion, shown: dict[str, str], by_id: dict[str, GoldQuestion]
) -> list[dict]:
    """The conversation a follow-up continues: the question it follows and the answer shown."""
    if not question.follow_up_of or question.follow_up_of not in by_id:
        return []
    previous = by_id[question.follow_up_of]
    return [
        {"role": "user", "content": previous.question},
        {"role": "assistant", "content": shown.get(previous.id, "")},
    ]


AnswerOne = Callable[[GoldQuestion, list[dict]], AnsweredQuestion]


def answer_all(
    questions: Sequence[GoldQuestion],
    answer_one: AnswerOne,
    progress: Callable[[int, int], None] | None = None,
) -> list[AnsweredQuestion]:
    """Ask every question in order; a follow-up gets the turn it follows as history."""
    by_id = {q.id: q for q in questions}
    shown: dict[str, str] = {}
    results = []
    for index, question in enumerate(questions, start=1):
        started = time.perf_counter()
        result = answer_one(question, history_for(question, shown, by_id))
        result.seconds = time.perf_counter() - started
        shown[question.id] = result.answer
        results.append(result)
        if progress:
            progress(index, len(questions))
    return results


Generate = Callable[[GoldQuestion, list[dict]], str]


def oracle_answer(question: GoldQuestion, _messages: list[dict]) -> str:
    """The gold answer, or for an unanswerable question the question asserted as fact.

    With it the citation and refusal metrics measure retrieval and attribution alone,
    the same on every machine (no model in the loop): a gate that a model's wording
    cannot move."""
    return question.answer or asserted(question.question)


def in_process_turn(
    searcher: Any,
    generate: Generate,
    embed: EmbedTexts,
    *,
    scope: Any,
    search_k: int,
    context_tokens: int,
    answer_tokens: int,
) -> AnswerOne:
    """One chat turn as the gateway runs it (rewrite, search, prompt, answer, attribution),
    with the ranking kept to ``RECALL_DEPTH`` for the recall metrics."""

    embed = SentenceVectorCache(embed)  # as the gateway's chat service holds it

    def answer_one(question: GoldQuestion, history: list[dict]) -> AnsweredQuestion:
        query = rewrite_query(question.question, history)
        ranked = searcher.search(query, max(RECALL_DEPTH, search_k), scope)
        composed = compose_prompt(
            question.question,
            ranked[:search_k],
            history=history,
            context_tokens=context_tokens,
            answer_tokens=answer_tokens,
        )
        raw_answer = generate(question, composed.messages)
        grounded = ground_answer(raw_answer, composed.sources, embed)
        return AnsweredQuestion(
            question=question,
            ranked=[(h.document_id, h.page, h.text) for h in ranked],
            answer=grounded.answer,
            declined=grounded.declined,
            citations=[asdict(c) for c in grounded.citations],
            sources=[asdict(h) for h in grounded.sources],
            extra={"raw_answer": raw_answer},
        )

    return answer_one
