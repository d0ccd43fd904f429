"""Token ids to streamed text deltas, and stop strings matched on that text.

Byte-level BPE tokens do not map one-to-one to characters: a multi-byte character can be
split over tokens, and decoding tokens one at a time can differ from decoding them
together. So each step decodes a short window of recent tokens twice (with and without
the new ones) and emits the difference, holding back while the window ends in an
incomplete character (U+FFFD). Stop strings are searched in the text; the visible text
lags by ``len(longest stop) - 1`` characters so a stop string split over tokens is never
partly streamed, and the stop string itself is never output.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Per-request state: decoded text so far and how much of it was already emitted."""

    def __init__(self, tokenizer: Any, prompt_token_ids: list[int], stop: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.hold_back = max((len(s) for s in self.stop), default=1) - 1
        self.token_ids: list[int] = []
        # start the window inside the prompt so the first token decodes in context
        self.context = list(prompt_token_ids[-4:])
        self.prefix_offset = 0
        self.read_offset = len(self.context)
        self.text = ""
        self.emitted = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add_token(self, token_id: int) -> str | None:
        """Append a token; return the stop string if one now appears in the text."""
        self.context.append(token_id)
        prefix_text = self._decode(self.context[self.prefix_offset : self.read_offset])
        full_text = self._decode(self.context[self.prefix_offset :])
        if len(full_text) > len(prefix_text) and not full_text.endswith(REPLACEMENT):
            search_from = max(len(self.text) - self.hold_back, 0)
            self.text += full_text[len(prefix_text) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.context)
            hits = [
                (index, stop)
                for stop in self.stop
                if (index := self.text.find(stop, search_from)) != -1
            ]
            if hits:
                index, stop = min(hits)
                self.text = self.text[:index]
                return stop
        return None

    def delta(self, finished: bool) -> str:
        """New text safe to show now (all of it once the request is finished)."""
        visible = len(self.text) if finished else max(len(self.text) - self.hold_back, self.emitted)
        out = self.text[self.emitted : visible]
        self.emitted = visible
        return out
