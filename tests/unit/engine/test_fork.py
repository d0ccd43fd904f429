"""n > 1 choices of one prompt: one prefill, the other choices fork from its blocks."""

from __future__ import annotations

import pytest
import torch

from tests.unit.gptoss.factory import build_reference, write_checkpoint


@pytest.fixture(scope="module")
def engine_factory(tmp_path_factory):
    from llm.engine.config import EngineConfig
    from llm.engine.llm_engine import LLMEngine

    torch.manual_seed(0)
    reference = build_reference(seed=4, num_hidden_layers=2)
    folder = write_checkpoint(reference, tmp_path_factory.mktemp("fork"))

    def build(**overrides):
        options = dict(dtype=torch.float32, block_size=4, num_kv_blocks=64, max_model_len=64)
        return LLMEngine.from_model_path(folder, EngineConfig(**{**options, **overrides}))

    return build


def _count_tokens(engine) -> list[int]:
    counted: list[int] = []
    real_run = engine.runner.run
    engine.runner.run = lambda batch: counted.append(batch.num_tokens) or real_run(batch)
    return counted


@pytest.mark.parametrize("prompt_len", [10, 12])  # last block partial / full
def test_twins_prefill_once_and_decode_like_separate_requests(engine_factory, prompt_len):
    from llm.engine.sampling_params import SamplingParams

    prompt = list(range(5, 5 + prompt_len))
    greedy = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    alone = engine_factory().generate([prompt], greedy)[0].token_ids

    engine = engine_factory()
    counted = _count_tokens(engine)
    free_at_start = engine.block_manager.num_free_blocks
    outputs = engine.generate([prompt, prompt, prompt], greedy)
    assert [o.token_ids for o in outputs] == [alone] * 3
    # one prefill of the prompt, then one recomputed token per twin, then decodes of 3
    assert sum(counted) == prompt_len + 2 + 3 * 5
    assert [o.num_cached_tokens for o in outputs] == [0, prompt_len - 1, prompt_len - 1]
    assert engine.block_manager.num_free_blocks == free_at_start


def test_forked_choices_sample_independently_by_seed(engine_factory):
    from llm.engine.sampling_params import SamplingParams

    prompt = list(range(20, 31))
    engine = engine_factory()
    params = [SamplingParams(max_tokens=8, temperature=1.0, seed=s) for s in (1, 2, 1)]
    outputs = engine.generate([prompt] * 3, params)
    assert outputs[0].token_ids == outputs[2].token_ids  # same seed, same draws
    assert outputs[0].token_ids != outputs[1].token_ids
    assert outputs[1].num_cached_tokens == len(prompt) - 1


def test_a_twin_whose_leader_is_gone_prefills_on_its_own(engine_factory):
    from llm.engine.sampling_params import SamplingParams

    engine = engine_factory(enable_prefix_caching=False)
    prompt = list(range(40, 50))
    greedy = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    leader = engine.add_request(None, prompt, greedy)
    twin = engine.add_request(None, prompt, greedy)
    engine.abort(leader)
    while engine.has_unfinished():
        engine.step()
    # a fork would count its shared prompt as hits; the prefix cache itself is off here
    assert engine.block_manager.prefix_hit_tokens == 0 and twin not in engine.requests
