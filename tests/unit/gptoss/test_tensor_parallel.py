"""gpt-oss split over two gloo ranks (heads and KV cache by head, MXFP4 experts by rank): the same as one rank."""

from __future__ import annotations

import torch

from llm.engine.llm_engine import LLMEngine
from llm.loader.safetensors import load_gpt_oss
from llm.parallel.context import ParallelContext
from tests.unit.engine.tp_helpers import GptOssCheckpointLoader, engine_config, run_recording

PROMPTS = [
    [1, 2, 3, 4, 5],
    [7, 8, 9] * 10,
    [42],
]  # 30 tokens: chunked prefill, past the window of 8


def test_each_rank_loads_only_its_share_of_heads_and_experts(mxfp4_dir):
    whole = load_gpt_oss(mxfp4_dir, torch.float32, load_tokenizer=False).model
    shard = load_gpt_oss(
        mxfp4_dir, torch.float32, load_tokenizer=False, parallel=ParallelContext(1, 2)
    ).model
    full, half = whole.model.layers[0], shard.model.layers[0]
    assert half.mlp.experts.gate_up_proj_blocks.shape[0] == 4  # 8 experts over 2 ranks
    assert half.mlp.experts.first_expert == 4
    assert torch.equal(half.mlp.experts.down_proj_blocks, full.mlp.experts.down_proj_blocks[4:])
    assert torch.equal(half.self_attn.sinks, full.self_attn.sinks[2:])  # heads 2, 3 of 4
    assert torch.equal(half.mlp.router.weight, full.mlp.router.weight)  # replicated
    assert not half.self_attn.o_proj.bias.any()  # o_proj's bias is added once, by rank 0
    assert shard.kv_cache_spec().num_kv_heads == 1
    assert sum(t.numel() for t in shard.buffers()) < sum(t.numel() for t in whole.buffers())


def test_two_ranks_give_the_logits_and_tokens_of_one(mxfp4_dir):
    one = LLMEngine.from_loader(GptOssCheckpointLoader(str(mxfp4_dir)), engine_config(1))
    tokens_one, logits_one = run_recording(one, PROMPTS)
    split = LLMEngine.from_loader(GptOssCheckpointLoader(str(mxfp4_dir)), engine_config(2))
    try:
        tokens_split, logits_split = run_recording(split, PROMPTS)
    finally:
        split.close()
    assert tokens_split == tokens_one
    for got, expected in zip(logits_split, logits_one, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
