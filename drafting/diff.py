"""Word diff of a clause against its source, in the compact ``[-old-]{+new+}`` notation."""

from __future__ import annotations

import difflib
import re

_TOKEN = re.compile(r"\{\{.*?\}\}|\s+|[^\s{]+|\{")
CONTEXT_WORDS = 3


def word_diff(before: str, after: str) -> str:
    """Only the changed stretches, each with a few words of context; ``""`` when equal."""
    if before == after:
        return ""
    old, new = _TOKEN.findall(before), _TOKEN.findall(after)
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    hunks: list[str] = []
    for group in matcher.get_grouped_opcodes(CONTEXT_WORDS * 2):
        parts: list[str] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                parts.append("".join(old[i1:i2]))
                continue
            if i2 > i1:
                parts.append("[-" + "".join(old[i1:i2]) + "-]")
            if j2 > j1:
                parts.append("{+" + "".join(new[j1:j2]) + "+}")
        hunks.append("".join(parts).strip())
    return " … ".join(hunks)
