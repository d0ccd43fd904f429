"""Token ids to streamed text: incremental detokenisation and OpenAI-style stop strings.

Used by backends that produce token ids (the HF reference). Decoding one token at a time
breaks multi-byte characters and merged spaces, so text is cut from a sliding window of
ids (the method vLLM uses). Stop strings must not reach the client, not even their first
characters, so text that could start a stop string is held back until it is decided.
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas, never emitting half a character."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (may be empty while a character is open)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        if full_text.endswith("\ufffd") or len(full_text) <= len(prefix_text):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return full_text[len(prefix_text) :]


class StopMatcher:
    """Cuts a text stream at the first stop string, holding back text that may begin one."""

    def __init__(self, stops: list[str]):
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._buffer = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit, whether a stop string was reached)."""
        if not self._stops:
            return text, False
        self._buffer += text
        hits = [i for i in (self._buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            out = self._buffer[: min(hits)]
            self._buffer = ""
            return out, True
        keep = 0
        for k in range(min(len(self._buffer), self._longest - 1), 0, -1):
            tail = self._buffer[-k:]
            if any(s.startswith(tail) for s in self._stops):
                keep = k
                break
        out = self._buffer[: len(self._buffer) - keep]
        self._buffer = self._buffer[len(self._buffer) - keep :]
        return out, False

    def flush(self) -> str:
        """Text still held back when generation ends without a stop string."""
        out, self._buffer = self._buffer, ""
        return out
