"""Turn the [n] markers of an answer into citations with a verbatim supporting quote.

Rules (unit-tested in tests/unit/retriever/test_citations.py):
- ``[n]`` and ``[n, m]`` markers refer to the prompt's sources, numbered from 1; numbers
  out of range are ignored; each source is cited once, in order of first mention.
- The quote is the sentence of the cited source sharing the most content words with the
  answer sentence that carries the marker; it is taken from the source text itself and
  checked to occur there verbatim.
- Fallback: an answer with no valid marker that still clearly draws on a source (at least
  ``FALLBACK_MIN_SHARED`` content words and ``FALLBACK_MIN_SHARE`` of the answer's content
  words found in one source) cites that best-overlapping source, because a small model
  often forgets the brackets. Answers that decline ("I don't know") cite nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from retriever.search import SearchHit

FALLBACK_MIN_SHARED = 3
FALLBACK_MIN_SHARE = 0.3

_MARKER = re.compile(r"\[(\s*\d+\s*(?:,\s*\d+\s*)*)\]")
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.M)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    """a an and are as at be been but by can could do does for from had has have how i if in into is it
    its me my of on or our should so than that the their them then there these they this to us was we
    were what when where which who will with would you your not no any all also may must""".split()
)
_DECLINE = re.compile(
    r"\b(i do not know|i don't know|i dont know|not (?:contain|mention|say)|no information|cannot find|can't find)\b",
    re.I,
)


@dataclass(frozen=True)
class Citation:
    """A source the answer relied on and the sentence of it that supports the answer."""

    document_id: str
    title: str
    page: int | None
    section: str | None
    quote: str


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def _sentences(text: str) -> list[str]:
    return [m.group(0).strip() for m in _SENTENCE.finditer(text) if m.group(0).strip()]


def best_quote(source_text: str, claim: str) -> str:
    """The source sentence sharing most content words with ``claim`` (verbatim from the source)."""
    claim_words = _content_words(claim)
    candidates = [s for s in _sentences(source_text) if s in source_text] or [source_text.strip()]
    best = max(
        candidates, key=lambda s: (len(_content_words(s) & claim_words), -candidates.index(s))
    )
    return best if best in source_text else source_text.strip()


def cited_numbers(answer: str, n_sources: int) -> list[tuple[int, str]]:
    """(source number, citing sentence without markers) per valid marker, first mention only.

    A marker before any word of its sentence ("... issued. [1] Next ...") belongs to the
    sentence before it.
    """
    seen: set[int] = set()
    out: list[tuple[int, str]] = []
    previous_claim = ""
    for sentence in _sentences(answer) or [answer]:
        claim = _MARKER.sub(" ", sentence)
        for match in _MARKER.finditer(sentence):
            leading = not _content_words(_MARKER.sub(" ", sentence[: match.start()]))
            citing = previous_claim if leading and previous_claim else claim
            for raw in match.group(1).split(","):
                number = int(raw)
                if 1 <= number <= n_sources and number not in seen:
                    seen.add(number)
                    out.append((number, citing))
        if _content_words(claim):
            previous_claim = claim
    return out


def _citation(hit: SearchHit, claim: str) -> Citation:
    return Citation(hit.document_id, hit.title, hit.page, hit.section, best_quote(hit.text, claim))


def extract_citations(answer: str, sources: Sequence[SearchHit]) -> list[Citation]:
    """Citations for an answer written against ``sources`` ([1] = sources[0])."""
    if not answer or not sources:
        return []
    marked = cited_numbers(answer, len(sources))
    if marked:
        return [_citation(sources[number - 1], claim) for number, claim in marked]
    if _DECLINE.search(answer):
        return []
    answer_words = _content_words(answer)
    if not answer_words:
        return []
    best_index, best_shared = -1, 0
    for index, hit in enumerate(sources):
        shared = len(answer_words & _content_words(hit.text))
        if shared > best_shared:
            best_index, best_shared = index, shared
    if best_shared >= FALLBACK_MIN_SHARED and best_shared / len(answer_words) >= FALLBACK_MIN_SHARE:
        return [_citation(sources[best_index], answer)]
    return []
