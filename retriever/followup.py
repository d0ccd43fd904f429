"""Make a follow-up question searchable on its own by folding in the previous question.

"And when does it expire?" retrieves nothing useful alone; prefixed with the question it
follows ("Is there a limit on how much award leave I can receive in a year?") it finds
the award-leave passage. The rule is deliberately simple and was measured on the
corpus's 100 questions (tests/integration/retrieval/test_followup_corpus.py: all 10
follow-ups detected, 1 of 80 standalone questions wrongly treated as one). A question is
a follow-up when it is one sentence of at most ``MAX_FOLLOW_UP_WORDS`` words and either
opens with a connective ("And", "What about", ...) or leans on a word that points back
("it", "that", "them", ...), not counting impersonal uses ("how long does it take",
"is it okay") or the acronym "IT". Only then is the last user question prepended;
anything else passes through unchanged, so a new topic is not polluted by the old one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

MAX_FOLLOW_UP_WORDS = 14
_OPENERS = ("and ", "but ", "also ", "so ", "then ", "what about ", "how about ", "what if ")
_POINTERS = frozenset("it its it's that those this these them they such same".split())
# "it" that points at nothing: "does it take", "is it okay", "it is possible to".
_IMPERSONAL = re.compile(
    r"\b(?:does|did|will|would) it take\b|\bis it (?:ok|okay|possible|true|allowed|fine|required)\b|\bit is (?:ok|okay|possible|true|allowed|required)\b"
)
_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE_END = re.compile(r"[.?!]\s+\S")


def is_follow_up(question: str) -> bool:
    """Whether a question depends on the previous one to make sense (see module docstring)."""
    text = question.strip()
    if not text or _SENTENCE_END.search(text):
        return False
    words = _WORD.findall(text)
    if len(words) > MAX_FOLLOW_UP_WORDS:
        return False
    lowered = text.lower()
    if lowered.startswith(_OPENERS):
        return True
    lowered = _IMPERSONAL.sub(" ", lowered)
    pointers = [w for w in _WORD.findall(lowered) if w in _POINTERS]
    # the acronym IT ("IT Standards") is not the pronoun
    return len(pointers) > sum(1 for w in words if w == "IT")


def last_user_message(history: Sequence[Mapping[str, str]]) -> str | None:
    """Content of the most recent user turn in a chat history, if any."""
    for turn in reversed(history or ()):
        if turn.get("role") == "user" and (turn.get("content") or "").strip():
            return str(turn["content"]).strip()
    return None


def rewrite_query(question: str, history: Sequence[Mapping[str, str]] = ()) -> str:
    """The text to search for: the question, with the previous user question folded in
    when the question is a follow-up. ``history`` is OpenAI-style [{role, content}, ...],
    oldest first, not including ``question``."""
    previous = last_user_message(history)
    if previous is None or not is_follow_up(question):
        return question
    return f"{previous} {question.strip()}"
