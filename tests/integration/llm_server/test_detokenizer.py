"""Streaming detokenisation on the real SmolLM2 tokenizer: deltas add up to the full decode."""

from __future__ import annotations

import pytest

from services.llm_server.backends.text_stream import IncrementalDetokenizer

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world! It's 3.14 o'clock.",
        "café déjà vu — 日本語 😀 ok",
        "  leading spaces\nand\ttabs  ",
    ],
)
def test_token_by_token_deltas_join_to_the_whole_text(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detokenizer = IncrementalDetokenizer(tokenizer)
    deltas = [detokenizer.push(i) for i in ids]
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in d for d in deltas)  # never half a character
