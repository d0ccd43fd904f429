"""Score retrieval against the gold corpus: evidence matching and recall@k.

Shared by the integration tests and bench/ingest.py so both count a hit the same way.

Evidence rule: text is normalised like corpus/verify.py (Unicode NFKC, typographic
quotes and dashes folded to ASCII, whitespace collapsed, lower-cased) and cut into words.
A hit supports a question when it comes from the gold document (and, for PDFs, the gold
page) and its words contain at least ``MIN_EVIDENCE_SHARE`` (60 %) of the evidence's
words in order (the matching blocks of difflib's SequenceMatcher over word lists). In-
order word matching tolerates what parsers do to text (bullets, line breaks, a quote cut
by a chunk boundary with most of it inside) but not a passage that merely shares a
topic.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

MIN_EVIDENCE_SHARE = 0.6

_FOLD = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2033": '"',
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
    "\u00a0": " ",
    "\u200b": "",
    "\u00ad": "",
}
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """verify.py's normalisation: NFKC, folded quotes/dashes, collapsed space, lower case."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(_FOLD.get(ch, ch) for ch in text)
    return re.sub(r"\s+", " ", text).strip().lower()


def words(text: str) -> list[str]:
    return _WORD.findall(normalise(text))


def evidence_share(evidence: str, text: str) -> float:
    """Fraction of the evidence's words found in ``text`` in order (0..1)."""
    needle = words(evidence)
    if not needle:
        return 0.0
    matcher = SequenceMatcher(None, needle, words(text), autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(needle)


@dataclass(frozen=True)
class GoldQuestion:
    id: str
    question: str
    doc: str | None
    page: int | None
    evidence: str | None
    answerable: bool
    follow_up_of: str | None
    answer: str | None = None


def load_questions(path: Path) -> list[GoldQuestion]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            q = json.loads(line)
            out.append(
                GoldQuestion(
                    q["id"],
                    q["question"],
                    q.get("doc"),
                    q.get("page"),
                    q.get("evidence"),
                    bool(q.get("answerable")),
                    q.get("follow_up_of"),
                    q.get("answer"),
                )
            )
    return out


def supports(question: GoldQuestion, document_id: str, page: int | None, text: str) -> bool:
    """Whether a hit (by document id = path under docs/, page, text) holds the evidence."""
    if not question.answerable or question.evidence is None or document_id != question.doc:
        return False
    if question.doc.lower().endswith(".pdf") and page != question.page:
        return False
    return evidence_share(question.evidence, text) >= MIN_EVIDENCE_SHARE


def search_text(
    question: GoldQuestion,
    by_id: dict[str, GoldQuestion],
    rewrite: Callable[[str, list[dict]], str],
) -> str:
    """The query sent for a question: follow-ups see the question they follow as history."""
    history: list[dict] = []
    if question.follow_up_of:
        history = [{"role": "user", "content": by_id[question.follow_up_of].question}]
    return rewrite(question.question, history)


@dataclass(frozen=True)
class RecallReport:
    recall_at_1: float
    recall_at_5: float
    questions: int
    misses: list[str]


def recall(
    questions: Sequence[GoldQuestion],
    ranked: Callable[[GoldQuestion], Iterable[tuple[str, int | None, str]]],
) -> RecallReport:
    """recall@1 and @5 over answerable questions; ``ranked`` gives (doc id, page, text) best first."""
    answerable = [q for q in questions if q.answerable]
    at1 = at5 = 0
    misses = []
    for q in answerable:
        hits = list(ranked(q))[:5]
        found = [supports(q, d, p, t) for d, p, t in hits]
        at1 += bool(found[:1] and found[0])
        at5 += any(found)
        if not any(found):
            misses.append(q.id)
    n = len(answerable) or 1
    return RecallReport(at1 / n, at5 / n, len(answerable), misses)


_QUESTION_OPENERS = (
    ("can i ", "You can "),
    ("do i ", "You "),
    ("is there ", "There is "),
    ("are there ", "There are "),
    ("does ", ""),
    ("is ", ""),
)


def asserted(question: str) -> str:
    """The question stated as if it were true: what a model that makes things up answers.

    "Can I take a paid sabbatical after five years of service?" becomes "You can take a
    paid sabbatical after five years of service." The evaluation's oracle answerer gives
    this for unanswerable questions, so the support check has a fluent, on-topic claim
    to reject (the hard case), not an empty one.
    """
    text = question.strip().rstrip("?").strip()
    lowered = text.lower()
    for opener, replacement in _QUESTION_OPENERS:
        if lowered.startswith(opener):
            text = replacement + text[len(opener) :]
            break
    return f"Yes. {text[:1].upper()}{text[1:]}."
