"""SmolLM2 on an int8 KV cache keeps to the greedy tokens of its unquantised (fp32) cache.

Greedy agreement = the fraction of positions whose token equals the fp32-cache run's, over
the first ``TOKENS`` new tokens of each chat prompt (a position past the shorter output
counts as a mismatch). Once a continuation diverges it rarely comes back, so one early
near-tie costs a whole prompt: the figure is a mean over many prompts.
"""

from __future__ import annotations

import pytest

from llm.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.slow

TOKENS = 24
PROMPTS = 8
# measured 0.943 on this machine (8 prompts x 24 tokens; bench/results/kv_quant.json has the
# corpus-prompt figures); a wrong scale or layout gives ~0
MIN_AGREEMENT = 0.6


def _agreement(ours: list[list[int]], reference: list[list[int]]) -> float:
    same = sum(
        a == b for o, r in zip(ours, reference, strict=True) for a, b in zip(o, r, strict=False)
    )
    total = sum(max(len(o), len(r)) for o, r in zip(ours, reference, strict=True))
    return same / total


def test_int8_kv_cache_keeps_smollm2_greedy_tokens(make_engine, prompts):
    prompts = prompts[:PROMPTS]
    greedy = SamplingParams(max_tokens=TOKENS, temperature=0.0)
    reference = [o.token_ids for o in make_engine().generate(prompts, greedy)]
    engine = make_engine(kv_dtype="int8")
    ours = [o.token_ids for o in engine.generate(prompts, greedy)]
    agreement = _agreement(ours, reference)
    assert agreement >= MIN_AGREEMENT, f"int8 KV greedy agreement {agreement:.3f}"
    assert engine.describe()["kv_dtype"] == "int8"
