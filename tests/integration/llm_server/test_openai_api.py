"""The official openai client against a live server on the real HF backend: the happy paths."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


def chat_prompt_ids(tokenizer, messages) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_models_lists_the_served_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]


def test_chat_non_stream_counts_tokens_like_the_tokenizer(client, tokenizer):
    reply = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=8, temperature=0
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert reply.usage.prompt_tokens == len(chat_prompt_ids(tokenizer, QUESTION))
    assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    if choice.finish_reason == "length":
        assert reply.usage.completion_tokens == 8
    else:
        assert choice.finish_reason == "stop"


def test_chat_stream_equals_non_stream_and_reports_usage(client):
    whole = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=6, temperature=0
    )
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text == whole.choices[0].message.content
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_n_choices_use_consecutive_seeds_and_reproduce(client):
    kwargs = {"model": MODEL, "messages": QUESTION, "max_tokens": 6, "temperature": 1.0}
    both = client.chat.completions.create(n=2, seed=7, **kwargs)
    assert [c.index for c in both.choices] == [0, 1]
    single = client.chat.completions.create(seed=7, **kwargs)
    first = single.choices[0].message.content
    second = client.chat.completions.create(seed=8, **kwargs).choices[0].message.content
    assert both.choices[0].message.content == first
    assert both.choices[1].message.content == second
    assert first != second  # the seed is really used (6 sampled tokens at temperature 1)
    assert both.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt counts once


def test_stop_string_ends_the_answer_before_it(client):
    kwargs = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0}
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    cut = client.chat.completions.create(stop=[stop, "never-there"], **kwargs).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.message.content == full[: full.index(stop)]
    streamed = client.chat.completions.create(stop=stop, stream=True, **kwargs)
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        == cut.message.content
    )


def test_text_completion_stream_and_non_stream(client, tokenizer):
    prompt = "The three primary colours are"
    whole = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=2
    )
    assert whole.usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    assert whole.choices[0].text
    logprobs = whole.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == whole.usage.completion_tokens
    assert all(1 <= len(top) <= 2 for top in logprobs.top_logprobs)
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    if whole.choices[0].finish_reason == "length":
        assert whole.usage.completion_tokens == 6
    streamed = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text


def test_chat_logprobs_describe_the_generated_tokens(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        # greedy decoding picks the most likely token
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
    text = "".join(e.token for e in content)
    assert text.startswith(reply.choices[0].message.content)


def test_several_prompts_stream_as_interleaved_choices(client):
    prompts = ["Apples are", "The sky is"]
    alone = [
        client.completions.create(model=MODEL, prompt=p, max_tokens=3, temperature=0)
        .choices[0]
        .text
        for p in prompts
    ]
    texts = {0: "", 1: ""}
    finished = set()
    for c in client.completions.create(
        model=MODEL, prompt=prompts, max_tokens=3, temperature=0, stream=True
    ):
        for choice in c.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finished.add(choice.index)
    assert [texts[0], texts[1]] == alone
    assert finished == {0, 1}
