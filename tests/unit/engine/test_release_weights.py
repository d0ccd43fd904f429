"""An engine frees the plain weights its packed or 4-bit copies replace, and nothing changes.

A bf16 projection packed for the GEMM held its weight twice; a projection whose int4
kernel takes every row count (fp32 rows on a CPU without native bf16) held a dense fp32
copy no product read. ``LLMEngine.from_loader`` frees them (the model is its own); a model
handed to the constructor stays whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from llm.engine.llm_engine import LLMEngine
from llm.engine.model_runner import weight_bytes
from llm.kernels import cpu_ext
from llm.kernels.cpu_paths import EVERY_ROW
from llm.loader.loaded import LoadedModel
from llm.models.llama import Linear

from .test_cpu_ext import PROMPTS, _engine, _generate, _int4_llama


def _projections(model) -> list[Linear]:
    return [m for m in model.layers.modules() if isinstance(m, Linear)]


def _set_int4_limits(model, rows: int) -> None:
    for module in _projections(model):
        module.quantised_max_rows = rows
    model.build_layer_stack()


def _outputs(model):
    return [(r.token_ids, r.logprobs) for r in _generate(_engine(model), PROMPTS, 6)]


NOTHING_TO_FREE = "no bf16 packing on this CPU (no AVX-512 BF16, no oneDNN bf16): nothing to free"


def _bf16_packs() -> bool:
    return Linear(64, 32, bias=False).to(torch.bfloat16).pack()


def test_packed_bf16_weights_are_freed_and_the_tokens_stay_the_same():
    if not _bf16_packs():
        pytest.skip(NOTHING_TO_FREE)
    model = _int4_llama(dtype=torch.bfloat16)
    before_bytes = weight_bytes(model)
    before = _outputs(model)
    freed = model.release_unused_weights()
    projections = _projections(model)
    assert freed == sum(p.out_features * p.in_features * 2 for p in projections)
    assert all(p.dense_released and p.weight.untyped_storage().nbytes() == 2 for p in projections)
    assert all(p.weight.shape == (p.out_features, p.in_features) for p in projections)
    assert not model.lm_head.dense_released  # the embedding's weight
    assert weight_bytes(model) == before_bytes - freed + 2 * len(projections)
    assert _outputs(model) == before  # a new engine prepares it again: the same packed copies
    assert model.release_unused_weights() == 0


def test_fp32_weights_are_freed_only_where_the_int4_kernel_takes_every_row():
    model = _int4_llama(dtype=torch.float32)
    if model.layers[0].mlp.down_proj.quantised_kind() != "int4":
        pytest.skip(f"no int4 kernel for fp32 rows here ({cpu_ext.status().reason})")
    engine = _engine(model)  # prepares the model (measures the limits): set them after
    _set_int4_limits(model, 16)
    assert model.release_unused_weights() == 0  # prefill rows still take the dense weights
    assert not any(p.dense_released for p in _projections(model))
    _set_int4_limits(model, EVERY_ROW)
    before = _generate(engine, PROMPTS, 6)
    assert model.release_unused_weights() > 0
    assert all(p.dense_released for p in _projections(model))
    # the prefill's 21 rows went through the int4 kernel before as after
    after = _generate(engine, PROMPTS, 6)
    assert [(r.token_ids, r.logprobs) for r in after] == [(r.token_ids, r.logprobs) for r in before]
    # a second engine over the model keeps the freed layers' limits: nothing to time against
    assert _outputs(model) == [(r.token_ids, r.logprobs) for r in before]
    assert all(p.quantised_max_rows == EVERY_ROW for p in _projections(model))


def test_a_freed_weight_refuses_to_multiply_rather_than_compute_with_its_stand_in():
    model = _int4_llama(dtype=torch.float32)
    if model.layers[0].mlp.down_proj.quantised_kind() != "int4":
        pytest.skip(f"no int4 kernel for fp32 rows here ({cpu_ext.status().reason})")
    _set_int4_limits(model, EVERY_ROW)
    assert model.release_unused_weights() > 0
    down = model.layers[0].mlp.down_proj
    with pytest.raises(RuntimeError, match="freed after loading.*autograd on"):
        down(torch.ones(2, down.in_features))  # autograd on: the int4 kernel is inference only
    cast = model.to(torch.bfloat16)  # 4-bit blocks packed for fp32 rows, dense weight gone
    with pytest.raises(RuntimeError, match="freed after loading.*torch.bfloat16 rows"):
        _outputs(cast)


@dataclass
class _Loaded:
    """A loader handing over a prepared-to-be model, as ``ShardLoader`` does."""

    model: torch.nn.Module

    def __call__(self, device, parallel) -> LoadedModel:
        return LoadedModel(self.model, None, None, "tiny", [])


def test_an_engine_frees_the_weights_of_a_model_it_loaded_but_not_of_one_it_was_given(
    monkeypatch,
):
    """...and frees them before it allocates the KV cache: the process's high-water mark
    is then the weights it keeps plus the cache, not both copies plus the cache."""
    if not _bf16_packs():
        pytest.skip(NOTHING_TO_FREE)
    from llm.engine.config import EngineConfig
    from llm.engine.model_runner import ModelRunner

    freed_at_kv_allocation: list[bool] = []
    allocate = ModelRunner.allocate_kv_cache

    def recording(runner, num_blocks):
        freed_at_kv_allocation.append(all(p.dense_released for p in _projections(runner.model)))
        return allocate(runner, num_blocks)

    monkeypatch.setattr(ModelRunner, "allocate_kv_cache", recording)
    trims: list[bool] = []
    monkeypatch.setattr("llm.engine.llm_engine.trim_heap", lambda: trims.append(True) or True)
    config = EngineConfig(num_kv_blocks=64, max_model_len=256, dtype=torch.bfloat16)
    given = _int4_llama(dtype=torch.bfloat16)
    LLMEngine(given, config)
    assert not any(p.dense_released for p in _projections(given))
    loaded = _int4_llama(dtype=torch.bfloat16)
    engine = LLMEngine.from_loader(_Loaded(loaded), config)
    assert all(p.dense_released for p in _projections(loaded))
    assert freed_at_kv_allocation == [False, True]
    assert trims == [True]  # the freed pages go back to the system once, after the release
    assert engine.describe()["weight_bytes"] == weight_bytes(loaded)


def test_trim_heap_says_whether_the_c_library_could_give_memory_back():
    import ctypes.util

    from llm.engine.heap import trim_heap

    libc = ctypes.util.find_library("c")
    expected = libc is not None and hasattr(ctypes.CDLL(libc), "malloc_trim")
    assert trim_heap() is expected
