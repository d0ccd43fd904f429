"""Text side on the real SmolLM2: chat template, streamed text, stop strings, EOS, limits."""

from __future__ import annotations

import asyncio

import pytest

from llm.chat import ChatTemplateError, render_chat
from llm.engine.async_engine import AsyncEngine
from llm.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour. Café? 日本"},
]


def test_chat_template_matches_transformers(smollm2, make_engine):
    engine = AsyncEngine(make_engine())
    ours = engine.apply_chat_template(MESSAGES)
    theirs = smollm2.tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True
    )
    theirs = list(theirs["input_ids"] if hasattr(theirs, "keys") else theirs)
    assert ours == theirs
    no_system = engine.apply_chat_template(MESSAGES[1:])
    assert smollm2.tokenizer.decode(no_system).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant"
    )
    with pytest.raises(ChatTemplateError, match="empty"):
        render_chat(smollm2.chat_template, [])
    with pytest.raises(ChatTemplateError, match="'role' and 'content'"):
        render_chat(smollm2.chat_template, [{"text": "hi"}])


def test_streamed_text_equals_decoding_all_tokens(make_engine, prompts):
    engine = AsyncEngine(make_engine())

    async def run():
        return [
            o
            async for o in engine.generate(
                prompts[8], SamplingParams(max_tokens=40, temperature=0.0), "s"
            )
        ]

    outs = asyncio.run(run())
    asyncio.run(engine.shutdown())
    tokens = [t for o in outs for t in o.new_token_ids]
    text = "".join(o.text_delta for o in outs)
    assert text and text == engine.tokenizer.decode(tokens, skip_special_tokens=True)


def test_stop_string_across_a_token_boundary(make_engine, prompts, smollm2):
    tokenizer = smollm2.tokenizer
    engine = make_engine()
    params = SamplingParams(max_tokens=40, temperature=0.0)
    [free_run] = engine.generate([prompts[0]], params)
    # a stop string made of the end of token 3 and the start of token 4 of the free run
    pieces = [tokenizer.decode(free_run.token_ids[:i]) for i in range(3, 6)]
    boundary = len(pieces[0])
    assert len(pieces[1]) - boundary >= 2, "token 4 should be at least two characters"
    stop = free_run.text[boundary - 1 : boundary + 1]
    cut = free_run.text.find(stop)
    [stopped] = engine.generate(
        [prompts[0]], SamplingParams(max_tokens=40, temperature=0.0, stop=[stop])
    )
    assert stopped.finish_reason == "stop"
    assert stopped.text == free_run.text[:cut]
    assert stop not in stopped.text


def test_eos_stops_and_ignore_eos_continues(make_engine, prompts, hf_greedy):
    engine = make_engine()
    eos = engine.eos_token_ids
    ended = [i for i, ref in enumerate(hf_greedy) if ref and ref[-1] in eos]
    assert ended, "some prompt's reference answer should end with EOS"
    i = ended[0]
    [natural] = engine.generate([prompts[i]], SamplingParams(max_tokens=64, temperature=0.0))
    assert natural.finish_reason == "stop" and natural.token_ids[-1] in eos
    assert "<|im_end|>" not in natural.text
    longer = len(natural.token_ids) + 3
    [forced] = engine.generate(
        [prompts[i]], SamplingParams(max_tokens=longer, temperature=0.0, ignore_eos=True)
    )
    assert forced.finish_reason == "length" and len(forced.token_ids) == longer
    [by_id] = engine.generate(
        [prompts[i]],
        SamplingParams(
            max_tokens=64, temperature=0.0, ignore_eos=True, stop_token_ids=[natural.token_ids[2]]
        ),
    )
    assert by_id.finish_reason == "stop" and by_id.token_ids == natural.token_ids[:3]


def test_max_model_len_is_enforced(make_engine, prompts):
    engine = make_engine(max_model_len=64)
    with pytest.raises(ValueError, match="at most 63"):
        engine.add_request("long", [1] * 64, SamplingParams())
    [capped] = engine.generate(
        [prompts[14][:50]], SamplingParams(max_tokens=100, temperature=0.0, ignore_eos=True)
    )
    assert capped.finish_reason == "length" and len(capped.token_ids) == 64 - 50


def test_seeded_sampling_is_reproducible_on_the_real_model(make_engine, prompts):
    engine = make_engine()
    params = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, top_k=40, seed=7)
    first = engine.generate([prompts[1], prompts[2]], params)
    second = engine.generate([prompts[1]], params)
    assert first[0].token_ids == second[0].token_ids
