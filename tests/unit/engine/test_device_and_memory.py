"""Placement and sizing: kernels refuse tensors off the runner's device; the KV planner's arithmetic."""

from __future__ import annotations

import pytest
import torch

from llm.engine.config import EngineConfig, resolve_device
from llm.engine.memory_planner import GpuMemory, KVCacheTooSmall, plan_kv_blocks, profiling_batch
from llm.kernels import KernelDeviceError, KernelPolicy, paged_attention, use_policy, write_kv_cache

GIB = 2**30


def test_a_tensor_off_the_runners_device_is_named():
    key = torch.zeros(2, 1, 4)
    cache = torch.zeros(3, 4, 1, 4)
    slots = torch.tensor([0, 1], device="meta")  # a placement bug: metadata left elsewhere
    policy = KernelPolicy(device=torch.device("cpu"))
    with use_policy(policy), pytest.raises(KernelDeviceError, match="argument 4 is on meta"):
        write_kv_cache(key, key, cache, cache, slots)


def test_the_policy_checks_every_call_and_is_scoped():
    query = torch.randn(2, 2, 4)
    cache = torch.randn(2, 4, 1, 4)
    args = (torch.tensor([[0, 1]], dtype=torch.int32), torch.tensor([0, 2], dtype=torch.int32))
    lens = torch.tensor([2], dtype=torch.int32)
    policy = KernelPolicy(backend="torch", device=torch.device("cpu"))
    with use_policy(policy):
        paged_attention(query, cache, cache, *args, lens, 0.5)
        paged_attention(query, cache, cache, *args, lens, 0.5)
    assert policy.checked_calls == 2
    paged_attention(query, cache, cache, *args, lens, 0.5)  # outside: the default policy
    assert policy.checked_calls == 2


def test_settings_values_are_validated():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        EngineConfig(device="tpu")
    with pytest.raises(ValueError, match="kernels must be one of"):
        EngineConfig(kernels="cutlass")
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        EngineConfig(gpu_memory_utilization=1.5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            EngineConfig(device="cuda:0")


def test_planner_gives_the_cache_what_utilisation_leaves():
    # an 80 GiB GPU: 1 GiB CUDA context (outside torch), 14 GiB weights + 2 GiB activations peak
    memory = GpuMemory(total=80 * GIB, free=63 * GIB, reserved=16 * GIB, peak=16 * GIB)
    assert memory.outside_torch == 1 * GIB
    block = 2 * 2**20
    blocks = plan_kv_blocks(memory, 0.90, block, min_blocks=8)
    assert blocks == (72 * GIB - 1 * GIB - 16 * GIB) // block
    # another process holding 10 GiB more leaves 10 GiB less
    crowded = GpuMemory(total=80 * GIB, free=53 * GIB, reserved=16 * GIB, peak=16 * GIB)
    assert plan_kv_blocks(crowded, 0.90, block, 8) == blocks - 10 * GIB // block


def test_planner_refuses_a_cache_smaller_than_one_sequence():
    memory = GpuMemory(total=24 * GIB, free=9 * GIB, reserved=14 * GIB, peak=14 * GIB)
    with pytest.raises(KVCacheTooSmall, match="ENCLAVE_LLM_GPU_MEMORY_UTILIZATION"):
        plan_kv_blocks(memory, 0.65, 2 * 2**20, min_blocks=512)


def test_profiling_batch_fills_the_token_budget_within_the_limits():
    config = EngineConfig(max_num_batched_tokens=1000, max_num_seqs=8, block_size=16)
    batch = profiling_batch(config, max_model_len=300)
    assert batch.num_new_tokens == [300, 300, 300, 100]
    tables = [b for seq in batch.seqs for b in seq.block_table]
    assert tables == list(range(len(tables)))  # distinct scratch blocks
    assert all(
        len(s.block_table) * 16 >= n for s, n in zip(batch.seqs, batch.num_new_tokens, strict=True)
    )
