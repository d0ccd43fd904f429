"""Turn an answer and the sources its prompt held into a grounded reply: citations or a decline.

Rules (unit-tested in tests/unit/retriever/test_citations.py):
- The citations are the sources that support some sentence of the answer, as found by
  ``retriever.attribution`` (lexical + MiniLM similarity, number and negation checks);
  ``[n]`` markers the model may write are ignored, and removed from the answer shown.
- Each source is cited once, in the order the answer first relies on it, with the
  verbatim source sentence(s) that best support it as the quote.
- An answer with no supported sentence (a made-up answer, the model's own "I don't
  know", an empty answer) is replaced by ``DECLINE_MESSAGE`` followed by the nearest
  sources, and cites nothing: the reader sees where to look instead of a guess.
- ``sources`` always lists every passage the prompt held, so a client can show them
  whether or not the answer was attributed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from retriever.attribution import Attribution, EmbedTexts, attribute
from retriever.search import SearchHit
from retriever.sentences import strip_markers

DECLINE_MESSAGE = "I could not find this in the documents you can access."
NEAREST_SOURCES_SHOWN = 3


@dataclass(frozen=True)
class Citation:
    """A source the answer relied on and the sentence of it that supports the answer."""

    document_id: str
    title: str
    page: int | None
    section: str | None
    quote: str


@dataclass(frozen=True)
class GroundedAnswer:
    """What the user is shown: the answer (or the decline), its citations, every source."""

    answer: str
    citations: list[Citation]
    sources: list[SearchHit]
    declined: bool
    attribution: Attribution


def where(hit: SearchHit) -> str:
    """'Title, page 2, Section' — how a reader finds a passage."""
    parts = [hit.title]
    if hit.page is not None:
        parts.append(f"page {hit.page}")
    if hit.section:
        parts.append(hit.section)
    return ", ".join(parts)


def decline_message(sources: Sequence[SearchHit]) -> str:
    """The decline, naming the nearest sources (best first, one line each) when there are any."""
    nearest = list(dict.fromkeys(where(hit) for hit in sources))[:NEAREST_SOURCES_SHOWN]
    if not nearest:
        return DECLINE_MESSAGE
    return DECLINE_MESSAGE + " The nearest passages were:\n" + "\n".join(f"- {n}" for n in nearest)


def is_decline(answer: str) -> bool:
    """Whether an answer shown to a user is the decline (for clients and the evaluation)."""
    return answer.strip().startswith(DECLINE_MESSAGE)


def ground_answer(answer: str, sources: Sequence[SearchHit], embed: EmbedTexts) -> GroundedAnswer:
    """Attribute ``answer`` to ``sources`` (the prompt's passages, best first)."""
    sources = list(sources)
    attribution = attribute(answer, [hit.text for hit in sources], embed)
    if not attribution.supported:
        return GroundedAnswer(decline_message(sources), [], sources, True, attribution)
    citations = []
    for index in attribution.cited:
        hit = sources[index]
        quote = attribution.best_quote(index)
        citations.append(Citation(hit.document_id, hit.title, hit.page, hit.section, quote))
    return GroundedAnswer(strip_markers(answer), citations, sources, False, attribution)
