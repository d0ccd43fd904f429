"""The KV cache dtype setting: validation, the planner's byte counts, and the engine on int8/fp8."""

from __future__ import annotations

import pytest
import torch

from llm.engine.config import EngineConfig, check_kv_dtype_serves
from llm.engine.model_runner import ModelRunner, kv_block_bytes, num_kv_blocks_for
from llm.engine.sampling_params import SamplingParams
from llm.kernels import kv_quant
from llm.kernels.kv_quant import QuantizedKVCache, cache_tensors


def test_unknown_kv_dtypes_are_refused_with_the_choices():
    with pytest.raises(
        ValueError, match=r"kv_dtype must be one of \('auto', 'bf16', 'fp8', 'int8'\)"
    ):
        EngineConfig(kv_dtype="int4")
    from pydantic import ValidationError

    from services.settings import Settings

    with pytest.raises(ValidationError, match="llm_kv_dtype"):
        Settings(llm_kv_dtype="fp16")
    assert Settings(llm_kv_dtype="int8").llm_kv_dtype == "int8"


def test_combinations_we_cannot_serve_are_refused(monkeypatch):
    # fp8 through Triton on a GPU without hardware e4m3 casts (A100 = 8.0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(ValueError, match="compute capability 8.9 or newer.*use kv_dtype int8"):
        check_kv_dtype_serves("fp8", torch.device("cuda", 0), "auto")
    check_kv_dtype_serves("int8", torch.device("cuda", 0), "auto")  # int8 runs anywhere
    check_kv_dtype_serves("fp8", torch.device("cpu"), "auto")  # torch's float8 casts on CPU
    # a torch build without float8
    monkeypatch.setitem(kv_quant.QUANTISED_KV_DTYPES, "fp8", None)
    with pytest.raises(ValueError, match="no float8_e4m3fn"):
        EngineConfig(kv_dtype="fp8")


def test_planner_counts_quantised_bytes_and_scales(tiny_model):
    spec = tiny_model.kv_cache_spec()  # fp32 model: 2 layers, 2 KV heads, head_dim 8
    slots = 2 * spec.num_layers * 4 * spec.num_kv_heads  # K and V, block_size 4
    assert kv_block_bytes(tiny_model, 4) == slots * spec.head_dim * 4
    assert kv_block_bytes(tiny_model, 4, "bf16") == slots * spec.head_dim * 2
    for kv in ("int8", "fp8"):
        assert kv_block_bytes(tiny_model, 4, kv) == slots * (spec.head_dim + 4)  # + fp32 scale
    # the same budget holds more blocks, and the runner allocates exactly what was counted
    budget = EngineConfig(block_size=4, kv_cache_mb=1)
    blocks = {
        kv: num_kv_blocks_for(tiny_model, EngineConfig(block_size=4, kv_cache_mb=1, kv_dtype=kv))
        for kv in ("auto", "bf16", "int8")
    }
    assert blocks["auto"] == num_kv_blocks_for(tiny_model, budget)
    assert blocks["auto"] < blocks["bf16"] < blocks["int8"]
    for kv in ("auto", "int8"):
        runner = ModelRunner(tiny_model, EngineConfig(block_size=4, kv_dtype=kv), 10)
        held = sum(
            t.numel() * t.element_size()
            for slot in runner.kv_slots
            for cache in slot
            for t in cache_tensors(cache)
        )
        assert held == 10 * kv_block_bytes(tiny_model, 4, kv)


def test_copy_on_write_copies_the_scales(tiny_model):
    runner = ModelRunner(tiny_model, EngineConfig(block_size=4, kv_dtype="int8"), 4)
    k_cache, _ = runner.kv_caches[0]
    assert isinstance(k_cache, QuantizedKVCache)
    k_cache.data[1] = 7
    k_cache.scale[1] = 0.5
    runner.copy_blocks([(1, 3)])
    assert (k_cache.data[3] == 7).all() and (k_cache.scale[3] == 0.5).all()


PROMPTS = [list(range(3, 40)), list(range(3, 40)) + [7, 9], list(range(50, 57))]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.mark.parametrize("kv", ["int8", "fp8"])
def test_a_quantised_cache_reads_back_the_same_however_the_batch_is_split(make_engine, kv):
    """Chunked prefill, a prefix-cache hit and decode read the rows one-shot prefill wrote.

    Each row is quantised once, against its own scale, so how the steps are cut must not
    change a token. (The tiny random model's sharp, chaotic logits make its int8 tokens
    drift from the fp32 cache's after a few steps; quality is measured on SmolLM2 in
    tests/integration/engine/test_kv_quant.py.)
    """
    one_shot = make_engine(kv_dtype=kv, enable_prefix_caching=False)
    expected = [o.token_ids for o in one_shot.generate(PROMPTS, GREEDY)]
    engine = make_engine(kv_dtype=kv, max_num_batched_tokens=16)  # chunked prefill, prefix hits
    assert [o.token_ids for o in engine.generate(PROMPTS, GREEDY)] == expected
    assert engine.block_manager.prefix_hit_tokens > 0
    assert engine.describe()["kv_dtype"] == {"int8": "int8", "fp8": "float8_e4m3fn"}[kv]
    assert engine.describe()["kv_cache_bytes"] == engine.block_manager.num_blocks * kv_block_bytes(
        engine.model, 4, kv
    )


def test_a_bf16_cache_under_an_fp32_model_follows_the_fp32_cache(make_engine):
    reference = [o.token_ids for o in make_engine().generate(PROMPTS, GREEDY)]
    engine = make_engine(kv_dtype="bf16")
    ours = [o.token_ids for o in engine.generate(PROMPTS, GREEDY)]
    same = sum(
        a == b for r, o in zip(reference, ours, strict=True) for a, b in zip(r, o, strict=False)
    )
    assert same >= 30, (ours, reference)  # measured 36 of 36
    assert engine.describe()["kv_dtype"] == "bfloat16"


def test_tensor_parallel_ranks_quantise_their_own_kv_heads_alike():
    """An int8 cache split by KV head holds the same rows as one rank's: the same tokens, half the bytes."""
    from dataclasses import replace

    from llm.engine.llm_engine import LLMEngine
    from tests.unit.engine.conftest import TINY
    from tests.unit.engine.tp_helpers import TinyLlamaLoader, engine_config

    tokens = {}
    for size in (1, 2):
        engine = LLMEngine.from_loader(
            TinyLlamaLoader(TINY), replace(engine_config(size), kv_dtype="int8")
        )
        try:
            tokens[size] = [o.token_ids for o in engine.generate(PROMPTS, GREEDY)]
            tokens[f"bytes{size}"] = engine.describe()["kv_cache_bytes"]
            assert engine.describe()["kv_dtype"] == "int8"
        finally:
            engine.close()
    assert tokens[2] == tokens[1]
    assert tokens["bytes2"] * 2 == tokens["bytes1"]
