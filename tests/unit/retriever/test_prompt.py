"""compose_prompt never exceeds its budget and drops what matters least first."""

from __future__ import annotations

import pytest

from retriever.prompt import MESSAGE_OVERHEAD_TOKENS, PromptTooLong, approx_tokens, compose_prompt
from retriever.search import SearchHit


def _hit(i: int, words: int = 60, page=None, section=None) -> SearchHit:
    text = " ".join(f"fact{i}_{j}" for j in range(words)) + "."
    return SearchHit(f"d{i}:0", f"d{i}", f"Doc {i}", page, section, text, 1.0 / (i + 1))


def _used(prompt, count=approx_tokens) -> int:
    return sum(count(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in prompt.messages)


def test_everything_fits_when_budget_allows():
    hits = [_hit(1, page=2, section="Leave > Award"), _hit(2)]
    prompt = compose_prompt("How long?", hits, context_tokens=4000, answer_tokens=200)
    assert prompt.sources == hits
    system, user = prompt.messages[0], prompt.messages[-1]
    assert (
        system["role"] == "system"
        and "[1]" in system["content"]
        and "do not know" in system["content"]
    )
    assert "[1] Doc 1, page 2, Leave > Award" in user["content"] and "[2] Doc 2" in user["content"]
    assert user["content"].rstrip().endswith("Question: How long?")


@pytest.mark.parametrize("context", [300, 420, 600, 900, 1500, 2500])
@pytest.mark.parametrize("n_history", [0, 3, 12])
def test_never_exceeds_budget(context, n_history):
    hits = [_hit(i, words=80) for i in range(6)]
    history = [
        {"role": "user" if t % 2 == 0 else "assistant", "content": "earlier words " * 40}
        for t in range(n_history)
    ]
    answer = 100
    prompt = compose_prompt(
        "What is the rule?", hits, history=history, context_tokens=context, answer_tokens=answer
    )
    assert _used(prompt) <= context - answer
    assert prompt.sources == hits[: len(prompt.sources)]  # lowest-ranked dropped first, order kept


def test_drops_low_ranked_sources_before_recent_history():
    hits = [_hit(i, words=80) for i in range(5)]
    history = [
        {"role": "user", "content": "previous question"},
        {"role": "assistant", "content": "previous answer"},
    ]
    prompt = compose_prompt("Q?", hits, history=history, context_tokens=900, answer_tokens=100)
    assert 1 <= len(prompt.sources) < 5
    assert [m["content"] for m in prompt.messages[1:3]] == ["previous question", "previous answer"]


def test_oversize_single_source_is_truncated_not_dropped():
    big = _hit(0, words=2000)
    prompt = compose_prompt("Q?", [big], context_tokens=600, answer_tokens=100)
    assert len(prompt.sources) == 1
    assert prompt.messages[-1]["content"].count("…") == 1
    assert _used(prompt) <= 500


def test_custom_token_counter_is_respected():
    def count_words(text: str) -> int:
        return len(text.split()) * 2

    hits = [_hit(i, words=50) for i in range(5)]
    prompt = compose_prompt(
        "Q?", hits, context_tokens=500, answer_tokens=100, count_tokens=count_words
    )
    assert _used(prompt, count_words) <= 400
    assert 1 <= len(prompt.sources) < 5


def test_no_hits_still_asks_the_question():
    prompt = compose_prompt("Anything?", [], context_tokens=500, answer_tokens=100)
    assert prompt.sources == [] and "No sources" in prompt.messages[-1]["content"]


def test_question_too_long_is_a_clear_error():
    with pytest.raises(PromptTooLong, match="too long"):
        compose_prompt("why " * 2000, [_hit(1)], context_tokens=1000, answer_tokens=100)
    with pytest.raises(PromptTooLong):
        compose_prompt("Q?", [], context_tokens=100, answer_tokens=100)


def test_approx_tokens_is_conservative():
    text = "You can carry over a maximum of 240 annual leave hours from one leave year to the next."
    assert approx_tokens(text) >= len(text.split()) * 1.2  # BPE: ~1 token per English word
    assert approx_tokens("(877) 472-6716") >= 13  # digit-by-digit tokenizers: one per character
    assert approx_tokens("Prüfung") >= 3 and approx_tokens("日本語") >= 9  # byte fallback
    assert approx_tokens("") == 0 and approx_tokens("a\n\nb") == 3
