"""Cut text into sentences as character spans, and the word features attribution compares.

Spans (not copies) so that a quote cut from a source is verbatim by construction. A
boundary is a line break (parsers put one paragraph, bullet or heading per line) or a
``.``/``!``/``?``/``;`` run followed by space, unless the word before it is a known
abbreviation ("e.g.", "U.S.", "No.") or a single letter (an initial).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOUNDARY = re.compile(r"[.!?;]+[\"')\]]*(?=\s)|\n+")
_ABBREVIATIONS = frozenset(
    "e.g i.e etc vs mr mrs ms dr no nos u.s u.s.a st jr sr inc ltd co approx fig sec art".split()
)
_MARKER = re.compile(r"\[\s*\d+(?:\s*,\s*\d+)*\s*\]")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOP = frozenset(
    """a an and are as at be been but by can could do does did for from had has have how i if in into
    is it its me my of on or our should so than that the their them then there these they this to us
    was we were what when where which who will with would you your also may must per up any all each
    get got just only about after before over under more most less such very yes same other""".split()
)
_NEGATIONS = frozenset(
    "not no never cannot can't won't don't doesn't didn't isn't aren't wasn't weren't shouldn't "
    "mustn't none neither nor without".split()
)
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
    if word != "_"
}
_NUMBER_WORDS.update(
    {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "ninety": "90", "hundred": "100"}
)
# bounds, not negations: "no later than five days" agrees with "within five days"
# and an answer's interjection ("No, it is forfeited.", "Generally no;") states no negation
_BOUND_PHRASES = re.compile(
    r"\b(?:no|not) (?:later|more|fewer|less|earlier|sooner|longer|greater) than\b"
    r"|\bnot (?:to )?exceed|\bno\b(?=\s*[,.;:!])"
)
_DIGITS = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class Span:
    """``text[start:end]`` is one sentence (already stripped of surrounding space)."""

    start: int
    end: int


def sentence_spans(text: str) -> list[Span]:
    """Sentence spans of ``text`` in order; empty and punctuation-only pieces are dropped."""
    spans: list[Span] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        end = match.end() if match.group(0)[0] != "\n" else match.start()
        if match.group(0)[0] != "\n" and _ends_with_abbreviation(text[start : match.start() + 1]):
            continue
        _add(spans, text, start, end)
        start = match.end()
    _add(spans, text, start, len(text))
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as strings (see ``sentence_spans``)."""
    return [text[span.start : span.end] for span in sentence_spans(text)]


def _ends_with_abbreviation(piece: str) -> bool:
    last = piece.rstrip(".!?;").rsplit(None, 1)[-1].lower() if piece.strip(" .!?;") else ""
    return last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())


def _add(spans: list[Span], text: str, start: int, end: int) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if not any(ch.isalnum() for ch in stripped):
        return
    offset = start + (len(piece) - len(piece.lstrip()))
    spans.append(Span(offset, offset + len(stripped)))


def strip_markers(text: str) -> str:
    """The text without ``[n]`` citation markers (attribution never relies on them)."""
    text = re.sub(r"[ \t]+([.,;!?])", r"\1", _MARKER.sub(" ", text))
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """Lower-cased, lightly stemmed words that carry meaning (stop words dropped)."""
    return {
        _stem(w)
        for w in _WORD.findall(text.lower())
        if w not in _STOP and w not in _NEGATIONS and len(w) > 1
    }


def numbers(text: str) -> set[str]:
    """Numbers a sentence states, digits or number words ("two" -> "2"; "1,000" -> "1000")."""
    lowered = text.lower()
    found = {m.group(0).replace(",", "") for m in _DIGITS.finditer(lowered)}
    found.update(_NUMBER_WORDS[w] for w in _WORD.findall(lowered) if w in _NUMBER_WORDS)
    return found


def is_negated(text: str) -> bool:
    """Whether a sentence carries a negation cue ("not", "never", "can't", "no", ...)."""
    lowered = _BOUND_PHRASES.sub(" ", text.lower().replace("\u2019", "'"))
    return any(w in _NEGATIONS or w.endswith("n't") for w in _WORD.findall(lowered))
