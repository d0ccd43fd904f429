"""Incremental detokenizer on a byte-level tokenizer: multi-byte characters, stop strings."""

from __future__ import annotations

from llm.engine.detokenizer import IncrementalDetokenizer


class ByteTokenizer:
    """Each token is one UTF-8 byte: the harshest case for streaming (characters split)."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def stream(text: str, stop: list[str]) -> tuple[list[str], str | None]:
    tok = ByteTokenizer()
    detok = IncrementalDetokenizer(tok, tok.encode("prompt: "), stop)
    deltas, hit = [], None
    for token in tok.encode(text):
        hit = detok.add_token(token)
        deltas.append(detok.delta(finished=hit is not None))
        if hit:
            break
    else:
        deltas.append(detok.delta(finished=True))
    return deltas, hit


def test_multibyte_characters_are_never_split():
    deltas, _ = stream("naïve café 日本 🙂 done", [])
    assert "".join(deltas) == "naïve café 日本 🙂 done"
    assert all("\ufffd" not in d for d in deltas)


def test_stop_string_across_tokens_is_excluded_and_never_streamed():
    deltas, hit = stream("answer: 42 END trailing", ["END"])
    assert hit == "END"
    assert "".join(deltas) == "answer: 42 "
    assert not any("E" in d for d in deltas)  # no partial stop string leaked mid-stream


def test_first_of_several_stop_strings_wins_and_text_without_stop_is_whole():
    deltas, hit = stream("alpha beta gamma", ["gam", "beta"])
    assert hit == "beta" and "".join(deltas) == "alpha "
    deltas, hit = stream("alpha beta", ["zzz"])
    assert hit is None and "".join(deltas) == "alpha beta"
