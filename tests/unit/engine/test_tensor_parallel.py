"""Tensor parallel on CPU with gloo ranks: the same logits and tokens as one rank, clean stops, clear failures.

Each engine start spawns worker processes (a few seconds each on two shared cores), so
one test drives one split through comparison, a dead rank and shutdown.
"""

from __future__ import annotations

import json

import pytest
import torch

from llm.engine.config import EngineConfig
from llm.engine.llm_engine import LLMEngine
from llm.models.gpt_oss_config import GptOssConfig
from llm.models.llama import LlamaForCausalLM
from llm.parallel.context import ParallelContext
from llm.parallel.shard import (
    RankFailedError,
    TensorParallelError,
    check_split,
    gpt_oss_split_shapes,
    shard_llama,
)
from tests.unit.engine.conftest import TINY
from tests.unit.engine.tp_helpers import (
    DieOnLoad,
    TinyLlamaLoader,
    engine_config,
    live_children,
    run_recording,
)

PROMPTS = [[1, 2, 3, 4, 5], [7, 8, 9] * 10, [42]]  # the 30-token prompt is prefilled in chunks


def test_two_ranks_match_one_then_a_dead_rank_fails_clearly_and_no_rank_outlives_the_engine():
    one = LLMEngine.from_loader(TinyLlamaLoader(TINY), engine_config(1))
    tokens_one, logits_one = run_recording(one, PROMPTS)

    split = LLMEngine.from_loader(TinyLlamaLoader(TINY), engine_config(2))
    workers = list(split.ranks.workers)
    assert split.describe()["tensor_parallel"] == 2
    # each rank caches only its kv heads: half the bytes of one rank's cache
    assert split.describe()["kv_cache_bytes"] * 2 == one.describe()["kv_cache_bytes"]
    tokens_split, logits_split = run_recording(split, PROMPTS)
    assert tokens_split == tokens_one
    assert len(logits_split) == len(logits_one)
    for got, expected in zip(logits_split, logits_one, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    workers[0].kill()
    workers[0].join()
    with pytest.raises(RankFailedError, match=r"rank 1 \(pid \d+\) exited with code -9"):
        split.generate([[5, 6, 7]])
    split.close()
    assert not any(w.is_alive() for w in workers)
    assert not {w.pid for w in workers} & live_children()


def test_a_rank_that_cannot_load_fails_the_start_with_its_reason():
    before = live_children()
    with pytest.raises(RankFailedError, match="rank 1 .* no such shard on this rank"):
        LLMEngine.from_loader(DieOnLoad(TinyLlamaLoader(TINY)), engine_config(2))
    assert live_children() <= before


def test_shapes_a_split_does_not_divide_are_refused_by_name():
    model = LlamaForCausalLM(TINY)  # 4 heads, 2 kv heads, intermediate 64
    with pytest.raises(TensorParallelError, match=r"does not divide model's num_kv_heads \(2\)"):
        shard_llama(model, ParallelContext(0, 4))
    with pytest.raises(TensorParallelError, match=r"does not divide model's num_heads \(4\)"):
        shard_llama(model, ParallelContext(0, 3))
    smollm2 = {"num_heads": 9, "num_kv_heads": 3, "intermediate_size": 1536}
    with pytest.raises(TensorParallelError, match=r"num_heads \(9\)"):
        check_split(2, smollm2, "model")
    check_split(3, smollm2, "model")
    experts = GptOssConfig(num_local_experts=6, num_attention_heads=8, num_key_value_heads=4)
    with pytest.raises(TensorParallelError, match=r"num_local_experts .* \(6\)"):
        check_split(4, gpt_oss_split_shapes(experts), "model")


@pytest.mark.parametrize("world", [2, 4, 8])
def test_gpt_oss_120b_divides_over_2_4_and_8_gpus(world):
    # the published gpt-oss-120b config.json, the fields a split cuts
    raw = {
        "model_type": "gpt_oss",
        "num_hidden_layers": 36,
        "num_local_experts": 128,
        "num_experts_per_tok": 4,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "vocab_size": 201088,
        "sliding_window": 128,
    }
    config = GptOssConfig.from_dict(json.loads(json.dumps(raw)))
    check_split(world, gpt_oss_split_shapes(config), "gpt-oss-120b")
    assert config.num_local_experts // world >= 1 and config.num_key_value_heads // world >= 1


def test_engine_config_refuses_what_the_machine_cannot_run():
    with pytest.raises(ValueError, match="tensor_parallel_size must be >= 1"):
        EngineConfig(device="cpu", tensor_parallel_size=0)
    with pytest.raises(ValueError, match="cuda_graphs is not supported"):
        EngineConfig(device="cpu", tensor_parallel_size=2, cuda_graphs=True)
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"torch sees {count}"):
            EngineConfig(device="cuda", tensor_parallel_size=count + 1)
    with pytest.raises(ValueError, match="from_model_path"):
        LLMEngine(LlamaForCausalLM(TINY), EngineConfig(device="cpu", tensor_parallel_size=2))


def test_a_llama_rank_keeps_only_its_slices_of_the_full_weights():
    from tests.unit.engine.tp_helpers import random_llama

    whole, shard = random_llama(TINY), shard_llama(random_llama(TINY), ParallelContext(1, 2))
    full, half = whole.layers[0], shard.layers[0]
    q, kv = TINY.num_heads * TINY.head_dim, TINY.num_kv_heads * TINY.head_dim
    qkv = full.self_attn.qkv_proj.weight
    expected = torch.cat([qkv[q // 2 : q], qkv[q + kv // 2 : q + kv], qkv[q + kv + kv // 2 :]])
    assert torch.equal(half.self_attn.qkv_proj.weight, expected)  # rank 1: second half of each
    assert torch.equal(half.self_attn.o_proj.weight, full.self_attn.o_proj.weight[:, q // 2 :])
    assert half.mlp.down_proj.weight.shape == (TINY.hidden_size, TINY.intermediate_size // 2)
    assert shard.kv_cache_spec().num_kv_heads == TINY.num_kv_heads // 2
    assert sum(p.numel() for p in shard.layers.parameters()) < sum(
        p.numel() for p in whole.layers.parameters()
    )
