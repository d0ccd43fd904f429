"""Greedy output equals transformers' fp32 greedy, token for token, in every batching mode."""

from __future__ import annotations

import pytest

from llm.engine.sampling_params import SamplingParams

from .conftest import NEW_TOKENS

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0)


def assert_same_as_hf(results, hf_greedy, prompts):
    mismatches = []
    for i, (result, reference) in enumerate(zip(results, hf_greedy, strict=True)):
        if result.token_ids != reference:
            first = next(
                (
                    j
                    for j, (a, b) in enumerate(zip(result.token_ids, reference, strict=False))
                    if a != b
                ),
                min(len(result.token_ids), len(reference)),
            )
            mismatches.append(
                f"prompt {i} ({len(prompts[i])} tokens) diverges at new token {first}"
            )
    assert not mismatches, "; ".join(mismatches)


def test_one_at_a_time_with_prefix_caching(make_engine, prompts, hf_greedy):
    assert len(prompts) >= 20 and len(set(map(tuple, prompts))) == len(prompts)
    engine = make_engine(enable_prefix_caching=True)
    results = [engine.generate([prompt], GREEDY)[0] for prompt in prompts]
    # the plain questions share the template's default system prompt (one full block); the
    # RAG prompts after the first share a long context prefix
    assert all(r.num_cached_tokens >= 16 for r in results[1:14])
    assert all(r.num_cached_tokens >= 64 for r in results[15:])
    assert_same_as_hf(results, hf_greedy, prompts)


def test_all_batched_without_prefix_caching(make_engine, prompts, hf_greedy):
    engine = make_engine(enable_prefix_caching=False)
    results = engine.generate(prompts, GREEDY)
    assert all(r.num_cached_tokens == 0 for r in results)
    assert_same_as_hf(results, hf_greedy, prompts)


def test_batched_under_preemption_and_chunked_prefill(make_engine, prompts, hf_greedy):
    # 40 blocks of 16 = 640 slots for ~20 x 170 tokens of demand; 128-token steps chunk the
    # prompts; prefix caching stays on, so recomputation after preemption reuses blocks.
    engine = make_engine(num_kv_blocks=40, max_num_batched_tokens=128, enable_prefix_caching=True)
    results = engine.generate(prompts, GREEDY)
    assert engine.scheduler.num_preemptions > 0, "the KV budget was meant to force preemption"
    assert_same_as_hf(results, hf_greedy, prompts)
