"""How many KV blocks fit a GPU: profile one full step, then give the cache what is left.

The engine may hold ``gpu_memory_utilization`` of the GPU's memory. From that share go
the weights and the activation peak of the largest step the scheduler can form (a
profiling forward pass of ``max_num_batched_tokens`` tokens measures both, as torch's
peak allocation), and whatever torch does not account for (CUDA context, other
processes): ``total - free - reserved`` at planning time. The rest is the KV cache.

The arithmetic (``plan_kv_blocks``) is pure so it can be tested against given figures;
``profile_gpu`` does the measuring on a real device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm.engine.config import EngineConfig
from llm.engine.model_runner import ModelRunner
from llm.engine.sampling_params import SamplingParams
from llm.engine.scheduler import ScheduledBatch
from llm.engine.sequence import Sequence
from llm.kernels.kv_quant import cache_tensors


@dataclass(frozen=True)
class GpuMemory:
    """Figures of one GPU after the profiling step, in bytes.

    ``total``/``free`` as ``torch.cuda.mem_get_info`` reports them; ``reserved`` is what
    torch's caching allocator holds; ``peak`` is torch's peak allocation during the
    profiling step (weights + activations).
    """

    total: int
    free: int
    reserved: int
    peak: int

    @property
    def outside_torch(self) -> int:
        """Memory in use that torch did not allocate: CUDA context, other processes."""
        return max(0, self.total - self.free - self.reserved)


class KVCacheTooSmall(ValueError):
    """The memory left for the KV cache cannot hold one sequence of ``max_model_len``."""


def plan_kv_blocks(
    memory: GpuMemory,
    utilization: float,
    block_bytes: int,
    min_blocks: int,
) -> int:
    """Blocks of ``block_bytes`` that fit ``utilization * total`` after the profiled use.

    Raises ``KVCacheTooSmall`` with the figures when fewer than ``min_blocks`` fit (one
    sequence of ``max_model_len`` could not run).
    """
    budget = int(memory.total * utilization) - memory.outside_torch - memory.peak
    blocks = max(0, budget // block_bytes)
    if blocks < min_blocks:
        gib = 2**30
        raise KVCacheTooSmall(
            f"the KV cache gets {max(budget, 0) / gib:.2f} GiB ({blocks} blocks) of "
            f"{memory.total / gib:.1f} GiB x utilisation {utilization} after weights and "
            f"activations ({memory.peak / gib:.2f} GiB) and memory outside torch "
            f"({memory.outside_torch / gib:.2f} GiB); one sequence of max_model_len needs "
            f"{min_blocks} blocks: raise ENCLAVE_LLM_GPU_MEMORY_UTILIZATION or lower "
            "ENCLAVE_LLM_MAX_MODEL_LEN / ENCLAVE_LLM_MAX_BATCHED_TOKENS"
        )
    return blocks


def profiling_batch(
    config: EngineConfig, max_model_len: int, num_groups: int = 1
) -> ScheduledBatch:
    """Prefills of ``max_num_batched_tokens`` tokens in all, over blocks 0..n-1 of a scratch cache.

    Every KV group gets the same blocks (the scratch contents do not matter).
    """
    batch = ScheduledBatch()
    remaining, next_block = config.max_num_batched_tokens, 0
    while remaining > 0 and len(batch) < config.max_num_seqs:
        length = min(remaining, max_model_len)
        seq = Sequence(f"profile-{len(batch)}", [0] * length, SamplingParams(max_tokens=1))
        num_blocks = -(-length // config.block_size)
        seq.block_tables = [
            list(range(next_block, next_block + num_blocks)) for _ in range(num_groups)
        ]
        next_block += num_blocks
        batch.seqs.append(seq)
        batch.num_new_tokens.append(length)
        remaining -= length
    return batch


def profile_gpu(runner: ModelRunner, config: EngineConfig, max_model_len: int) -> GpuMemory:
    """Run the largest step once on a scratch cache and read the GPU's memory figures."""
    device = runner.device
    batch = profiling_batch(config, max_model_len, runner.kv_groups.num_groups)
    scratch_blocks = sum(len(seq.block_table) for seq in batch.seqs)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    runner.allocate_kv_cache(scratch_blocks)
    runner.run(batch)
    torch.cuda.synchronize(device)
    scratch_bytes = scratch_blocks * sum(
        t.element_size() * t[0].numel()
        for slot in runner.kv_slots
        for cache in slot
        for t in cache_tensors(cache)
    )
    peak = torch.cuda.max_memory_allocated(device) - scratch_bytes
    runner.allocate_kv_cache(0)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    return GpuMemory(total=total, free=free, reserved=torch.cuda.memory_reserved(device), peak=peak)
