"""gpt-oss prompts five times the sliding window: sliding layers hold a bounded set of blocks.

A tiny random gpt-oss (one sliding layer with an 8-token window, one full layer) runs in
fp32 through ``LLMEngine`` with our CPU kernels, 4-token blocks, 7-token prefill chunks, a
cache small enough to force preemption, prefix caching and two copies of one prompt
(n=2). Greedy tokens must equal transformers', and at every step no sequence's sliding
group may hold more blocks than its window plus one chunk needs, while the full group
holds every block. The Triton path is covered by ``test_engine_triton_parity``.
"""

from __future__ import annotations

import pytest
import torch

from tests.integration.gptoss.test_engine_triton_parity import greedy_reference
from tests.unit.gptoss.factory import TINY, build_reference, write_checkpoint

NEW_TOKENS = 8
BLOCK, CHUNK = 4, 7
WINDOW = TINY["sliding_window"]
SLIDING_BOUND = (WINDOW - 1 + CHUNK + BLOCK - 2) // BLOCK + 1  # window before a chunk + chunk


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reference = build_reference(seed=0, num_hidden_layers=2)
    yield reference, write_checkpoint(reference, tmp_path_factory.mktemp("slide"), "dense")
    torch.set_num_threads(threads)


def _watch_held_blocks(engine) -> dict[str, int]:
    """Record, after every step, the most blocks any sequence held per group."""
    most = {"full": 0, "sliding": 0}
    real_step = engine.step
    bm = engine.block_manager

    def step():
        outputs = real_step()
        for seq in engine.scheduler.running:
            most["full"] = max(most["full"], bm.num_held_blocks(seq, 0))
            most["sliding"] = max(most["sliding"], bm.num_held_blocks(seq, 1))
        return outputs

    engine.step = step
    return most


@pytest.mark.parametrize("cuda_graphs", [False, True])  # True: padded decode inputs, eager on CPU
def test_long_prompts_match_transformers_with_bounded_sliding_blocks(tiny_folder, cuda_graphs):
    from llm.engine.config import EngineConfig
    from llm.engine.llm_engine import LLMEngine
    from llm.engine.sampling_params import SamplingParams

    reference, folder = tiny_folder
    config = EngineConfig(
        device="cpu",
        kernels="torch",
        dtype=torch.float32,
        block_size=BLOCK,
        num_kv_blocks=26,  # the three sequences do not fit at once: a preemption
        max_num_batched_tokens=CHUNK,
        max_model_len=128,
        cuda_graphs=cuda_graphs,
    )
    engine = LLMEngine.from_model_path(folder, config)
    assert engine.runner.kv_groups.windows == (None, WINDOW)
    assert len(engine.runner.kv_slots) == 1  # one sliding + one full layer share one slot
    most = _watch_held_blocks(engine)
    generator = torch.Generator().manual_seed(2)
    long_prompt = torch.randint(0, 255, (5 * WINDOW,), generator=generator).tolist()
    prompts = [long_prompt, long_prompt, long_prompt[:32] + [5, 6, 7, 8, 9]]
    outputs = engine.generate(
        prompts, SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    )
    for prompt, output in zip(prompts, outputs, strict=True):
        assert list(output.token_ids) == greedy_reference(reference, prompt, NEW_TOKENS)
    assert outputs[1].num_cached_tokens == len(long_prompt) - 1  # n=2: forked, one prefill
    assert sum(o.num_preemptions for o in outputs) > 0
    assert outputs[2].num_cached_tokens > 0  # the shared prefix hit the cache
    assert most["full"] == -(-(len(long_prompt) + NEW_TOKENS) // BLOCK)
    assert 0 < most["sliding"] <= SLIDING_BOUND < most["full"]
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
