"""Make a follow-up question searchable on its own by folding in the previous question.

"And when does it expire?" retrieves nothing useful alone; prefixed with the question it
follows ("Is there a limit on how much award leave I can receive in a year?") it finds
the award-leave passage. The rule is deliberately simple and was measured on the
corpus's questions (tests/integration/retrieval): a question is a follow-up when it is
short (at most ``MAX_FOLLOW_UP_WORDS`` words) and either opens with a connective ("And",
"What about", ...) or leans on a word that points back ("it", "that", "them", ...).
Only then is the last user question prepended; anything else passes through unchanged,
so a new topic in a conversation is not polluted by the old one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

MAX_FOLLOW_UP_WORDS = 12
_OPENERS = ("and ", "but ", "also ", "so ", "then ", "what about ", "how about ", "what if ", "and if ")
_POINTERS = frozenset(
    "it its it's that those this these them they their there such same one ones he she him her".split()
)
_WORD = re.compile(r"[a-z']+")


def is_follow_up(question: str) -> bool:
    """Whether a question depends on the previous one to make sense (see module docstring)."""
    text = question.strip().lower()
    words = _WORD.findall(text)
    if not words or len(words) > MAX_FOLLOW_UP_WORDS:
        return False
    return text.startswith(_OPENERS) or any(w in _POINTERS for w in words)


def last_user_message(history: Sequence[Mapping[str, str]]) -> str | None:
    """Content of the most recent user turn in a chat history, if any."""
    for turn in reversed(history or ()):
        if turn.get("role") == "user" and (turn.get("content") or "").strip():
            return turn["content"].strip()
    return None


def rewrite_query(question: str, history: Sequence[Mapping[str, str]] = ()) -> str:
    """The text to search for: the question, with the previous user question folded in
    when the question is a follow-up. ``history`` is OpenAI-style [{role, content}, ...],
    oldest first, not including ``question``."""
    previous = last_user_message(history)
    if previous is None or not is_follow_up(question):
        return question
    return f"{previous} {question.strip()}"
