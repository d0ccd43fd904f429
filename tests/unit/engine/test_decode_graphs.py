"""Padded decode steps (the inputs CUDA graphs replay) give the tokens of the unpadded eager path."""

from __future__ import annotations

import pytest
import torch

from llm.engine.decode_graphs import batch_buckets
from tests.unit.gptoss.factory import build_reference, write_checkpoint

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_buckets_cover_every_batch_size_up_to_the_limit():
    assert batch_buckets(1) == [1]
    assert batch_buckets(6) == [1, 2, 4, 6]
    assert batch_buckets(64) == [1, 2, 4, 8, 16, 32, 64]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return write_checkpoint(
        build_reference(seed=2, num_hidden_layers=2), tmp_path_factory.mktemp("graphs")
    )


@pytest.mark.parametrize("device", DEVICES)
def test_padded_decode_steps_match_eager(checkpoint, device):
    """On CPU the padded inputs run eagerly; on CUDA they are replayed from captured graphs."""
    from llm.engine.config import EngineConfig
    from llm.engine.llm_engine import LLMEngine
    from llm.engine.sampling_params import SamplingParams

    generator = torch.Generator().manual_seed(3)
    # 3 sequences pad to the bucket of 4; lengths differ so the block tables differ in width
    prompts = [torch.randint(0, 255, (n,), generator=generator).tolist() for n in (5, 11, 17)]
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    outputs = {}
    for graphs in (False, True):
        config = EngineConfig(
            device=device,
            dtype=torch.float32,
            block_size=4,
            num_kv_blocks=64,
            max_num_seqs=6,
            max_model_len=64,
            cuda_graphs=graphs,
        )
        engine = LLMEngine.from_model_path(checkpoint, config)
        assert (engine.runner.decode_graphs is not None) == graphs
        padded_steps = []
        if graphs:
            padded = engine.runner.decode_graphs
            real_run = padded.run
            padded.run = lambda ids, *rest, steps=padded_steps, run=real_run: (
                steps.append(len(ids)) or run(ids, *rest)
            )
        outputs[graphs] = [o.token_ids for o in engine.generate(prompts, params)]
        if graphs:
            assert padded.replay == (device == "cuda")
            assert 3 in padded_steps, "the 3-sequence decodes should go through the padded path"
    assert outputs[True] == outputs[False]
