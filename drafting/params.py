"""The parameters of approved clause text: the only spans a draft may change besides fields.

A parameter is a duration (``12 months``, ``two (2) years``, ``1 year(s)``), a money
amount, a percentage or a short bracketed blank (``[Fill in state]``). The model names a
parameter by its index and proposes a value; ``check_value`` accepts only a short value of
the same kind, so no sentence of legal text can be written through this door.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_NUMBER_WORDS = (
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|eighteen|"
    r"twenty(?:[- ]four)?|thirty|thirty[- ]six|forty[- ]five|sixty|ninety"
)
DURATION = re.compile(
    rf"\b(?:\d+|{_NUMBER_WORDS})(?:\s*\(\d+\))?\s+(?:business\s+|calendar\s+)?"
    r"(?:year|month|week|day)s?(?:\(s\))?",
    re.IGNORECASE,
)
AMOUNT = re.compile(r"(?:US)?\$\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?\s?(?:USD|EUR|dollars)\b")
PERCENT = re.compile(r"\b\d+(?:\.\d+)?\s?(?:%|percent\b)")
BRACKET = re.compile(r"\[(?![ xX]\])[^\[\]\n]{1,60}\](?!\()")  # not a [x] checkbox, not a link
KINDS = (("duration", DURATION), ("amount", AMOUNT), ("percent", PERCENT), ("blank", BRACKET))
MAX_VALUE = 60
MAX_WORDS = 6
_SENTENCE_BREAK = re.compile(r"[.;:!?]\s|[.;:!?]$")
_SAFE_VALUE = re.compile(r"^[\w$%.,'’()\-/ ]+$")


@dataclass(frozen=True)
class Parameter:
    """A changeable span of one block's text."""

    block: int
    start: int
    end: int
    text: str
    kind: str


def find_parameters(
    block: int, text: str, protected: Sequence[tuple[int, int]] = ()
) -> list[Parameter]:
    """Non-overlapping parameters of ``text``, longest first at each position; spans in ``protected`` (placeholders) are skipped."""
    candidates = [
        (m.start(), m.end(), kind) for kind, pattern in KINDS for m in pattern.finditer(text)
    ]
    candidates.sort(key=lambda c: (c[0], -(c[1] - c[0])))
    taken: list[Parameter] = []
    busy = list(protected)
    for start, end, kind in candidates:
        if any(start < b_end and b_start < end for b_start, b_end in busy):
            continue
        if kind == "blank":  # a blank holding a duration, say, takes only a duration
            kind = _kind_of(text[start + 1 : end - 1]) or kind
        busy.append((start, end))
        taken.append(Parameter(block, start, end, text[start:end], kind))
    return sorted(taken, key=lambda p: p.start)


def _kind_of(text: str) -> str | None:
    return next((kind for kind, pattern in KINDS[:-1] if pattern.fullmatch(text.strip())), None)


def check_value(parameter: Parameter, value: str) -> str | None:
    """Why ``value`` may not replace ``parameter`` (None: it may)."""
    value = value.strip()
    if not value:
        return "empty value"
    if len(value) > MAX_VALUE or len(value.split()) > MAX_WORDS:
        return f"a parameter value is at most {MAX_VALUE} characters and {MAX_WORDS} words"
    if _SENTENCE_BREAK.search(value):
        return "a parameter value is one phrase, not sentences"
    if not _SAFE_VALUE.match(value):
        return "a parameter value holds only words, digits and simple punctuation"
    if parameter.kind == "blank":
        return None
    pattern = dict(KINDS)[parameter.kind]
    if not pattern.fullmatch(value):
        return f"{value!r} is not a {parameter.kind} like {parameter.text!r}"
    return None
