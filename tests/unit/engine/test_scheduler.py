"""Scheduler on the tiny model: chunked prefill beside decodes, preemption, limits."""

from __future__ import annotations

import random

from llm.engine.sampling_params import SamplingParams

GREEDY = dict(temperature=0.0, ignore_eos=True)


def prompts(n: int, length: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1, 256) for _ in range(length + i)] for i in range(n)]


def test_long_prefill_is_chunked_while_decode_keeps_going(make_engine):
    engine = make_engine(max_num_batched_tokens=8)
    engine.add_request("short", [5, 6, 7], SamplingParams(max_tokens=12, **GREEDY))
    engine.step()  # prefill of "short" + first token
    long_prompt = prompts(1, 40)[0]
    engine.add_request("long", long_prompt, SamplingParams(max_tokens=2, **GREEDY))
    steps_with_long_prefill = 0
    while engine.requests["long"].seq.num_computed_tokens < len(long_prompt):
        outs = {o.request_id: o for o in engine.step()}
        assert "short" in outs and len(outs["short"].new_token_ids) == 1  # decode not stalled
        steps_with_long_prefill += 1
    assert steps_with_long_prefill >= 40 // 8  # the prompt took several steps
    while engine.has_unfinished():
        engine.step()


def test_chunked_prefill_gives_the_same_tokens_as_one_shot(make_engine):
    [prompt] = prompts(1, 37, seed=3)
    params = SamplingParams(max_tokens=10, **GREEDY)
    whole = make_engine(max_num_batched_tokens=256).generate([prompt], params)[0].token_ids
    chunked = make_engine(max_num_batched_tokens=5).generate([prompt], params)[0].token_ids
    assert chunked == whole


def test_preemption_recomputes_and_matches_unconstrained_run(make_engine):
    batch = prompts(4, 8, seed=1)
    params = SamplingParams(max_tokens=20, **GREEDY)
    roomy = make_engine(num_kv_blocks=64).generate(batch, params)
    tight_engine = make_engine(num_kv_blocks=12)  # 48 slots for ~4 x 30 tokens
    tight = tight_engine.generate(batch, params)
    assert tight_engine.scheduler.num_preemptions > 0
    assert any(r.num_preemptions for r in tight)
    assert [r.token_ids for r in tight] == [r.token_ids for r in roomy]


def test_max_num_seqs_caps_the_running_set(make_engine):
    engine = make_engine(max_num_seqs=2)
    for i, prompt in enumerate(prompts(5, 4)):
        engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=3, **GREEDY))
    while engine.has_unfinished():
        engine.step()
        assert len(engine.scheduler.running) <= 2


def test_request_that_outgrows_the_whole_cache_finishes_with_length(make_engine):
    engine = make_engine(num_kv_blocks=4)  # 16 slots in all
    [result] = engine.generate([list(range(1, 11))], SamplingParams(max_tokens=50, **GREEDY))
    assert result.finish_reason == "length"
    assert 0 < len(result.token_ids) < 50


def test_abort_frees_blocks_mid_generation(make_engine):
    engine = make_engine()
    free = engine.block_manager.num_free_blocks
    engine.add_request("x", list(range(1, 30)), SamplingParams(max_tokens=50, **GREEDY))
    engine.step()
    assert engine.block_manager.num_free_blocks < free
    out = engine.abort("x")
    assert out.finished and out.finish_reason == "abort"
    assert engine.block_manager.num_free_blocks == free
    assert engine.abort("x") is None


def test_prefix_cache_hit_gives_the_same_tokens(make_engine):
    engine = make_engine()
    shared = prompts(1, 20, seed=7)[0]
    params = SamplingParams(max_tokens=8, **GREEDY)
    first = engine.generate([shared + [1, 2]], params)[0]
    second = engine.generate([shared + [1, 2]], params)[0]
    assert first.num_cached_tokens == 0 and second.num_cached_tokens >= 16
    assert second.token_ids == first.token_ids
    cold = make_engine(enable_prefix_caching=False).generate([shared + [1, 2]], params)[0]
    assert cold.token_ids == first.token_ids
