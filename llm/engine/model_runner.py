"""Tensors in, logits out: owns the paged KV cache and lays out each mixed batch.

The runner turns a ``ScheduledBatch`` into the flat token batch and ``AttentionMetadata``
of the model contract (``llm.models.base``), applies the block copies that copy-on-write
asked for, runs the model under ``inference_mode`` and returns one row of logits per
sequence that samples this step (those whose new tokens reach their end).
"""

from __future__ import annotations

import threading

import torch

from llm.engine.config import EngineConfig
from llm.engine.scheduler import ScheduledBatch
from llm.models.base import AttentionMetadata, CausalLM


def kv_block_bytes(model: CausalLM, block_size: int) -> int:
    """Bytes one block takes across all layers, K and V."""
    spec = model.kv_cache_spec()
    itemsize = torch.empty((), dtype=spec.dtype).element_size()
    return 2 * spec.num_layers * block_size * spec.num_kv_heads * spec.head_dim * itemsize


def num_kv_blocks_for(model: CausalLM, config: EngineConfig) -> int:
    """``config.num_kv_blocks`` if set, else as many blocks as ``kv_cache_mb`` holds."""
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks
    return max(1, config.kv_cache_mb * 2**20 // kv_block_bytes(model, config.block_size))


def kv_cache_storage(shape: tuple[int, int, int, int], dtype: torch.dtype) -> torch.Tensor:
    """A zeroed CPU cache of logical shape [num_blocks, block_size, num_kv_heads, head_dim].

    The memory is laid out head-major ([heads, blocks, block_size, head_dim]) and returned
    as a permuted view: the CPU attention gathers blocks per head with no transpose copy
    (``llm.kernels.cpu_attention.head_major``). The logical shape is the kernels' contract,
    so the Triton kernels, which want it contiguous, get a plain tensor wherever a CUDA
    runner allocates one.
    """
    blocks, block_size, heads, head_dim = shape
    return torch.zeros((heads, blocks, block_size, head_dim), dtype=dtype).permute(1, 2, 0, 3)


class ModelRunner:
    """Runs the model over one scheduled step against the per-layer KV caches."""

    def __init__(self, model: CausalLM, config: EngineConfig, num_blocks: int) -> None:
        self.model = model
        self.num_threads = config.num_threads
        self._threads_set_in: int | None = None  # the thread whose torch threads we last set
        prepare = getattr(model, "prepare_for_inference", None)
        if prepare is not None:  # e.g. pack CPU weights once the loaded weights are final
            prepare()
        self.block_size = config.block_size
        spec = model.kv_cache_spec()
        shape = (num_blocks, config.block_size, spec.num_kv_heads, spec.head_dim)
        self.kv_caches = [
            (kv_cache_storage(shape, spec.dtype), kv_cache_storage(shape, spec.dtype))
            for _ in range(spec.num_layers)
        ]

    def _use_own_threads(self) -> None:
        """Apply ``num_threads`` in the thread that steps the engine, once per thread.

        Set here rather than at load: an OpenMP thread team is made per calling thread,
        and teams left behind by a loading thread push libgomp over the core count, where
        it stops spin-waiting and every small parallel op pays a wake-up (measured on 2
        cores: a 1-sequence step took 20-24 ms in a worker thread vs 10 ms with this).
        """
        if self.num_threads is not None and self._threads_set_in != threading.get_ident():
            torch.set_num_threads(self.num_threads)
            self._threads_set_in = threading.get_ident()

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Apply copy-on-write: block ``dst`` gets ``src``'s K/V in every layer."""
        if not copies:
            return
        src = torch.tensor([c[0] for c in copies])
        dst = torch.tensor([c[1] for c in copies])
        for k_cache, v_cache in self.kv_caches:
            k_cache[dst] = k_cache[src]
            v_cache[dst] = v_cache[src]

    def prepare(
        self, batch: ScheduledBatch
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        """Flat ids/positions, the metadata, and which batch rows sample this step."""
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        query_start = [0]
        seq_lens: list[int] = []
        logits_indices: list[int] = []
        sampling_rows: list[int] = []
        for row, (seq, num_new) in enumerate(zip(batch.seqs, batch.num_new_tokens, strict=True)):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + num_new
            input_ids.extend(seq.token_ids[start:end])
            table = seq.block_table
            if num_new == 1:
                positions.append(start)
                slots.append(table[start // bs] * bs + start % bs)
            else:
                span = range(start, end)
                positions.extend(span)
                slots.extend(table[p // bs] * bs + p % bs for p in span)
            query_start.append(query_start[-1] + num_new)
            seq_lens.append(end)
            if end == len(seq):
                logits_indices.append(query_start[-1] - 1)
                sampling_rows.append(row)
        max_blocks = max(len(seq.block_table) for seq in batch.seqs)
        block_tables = torch.tensor(
            [seq.block_table + [-1] * (max_blocks - len(seq.block_table)) for seq in batch.seqs],
            dtype=torch.int32,
        )
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64),
            block_tables=block_tables,
            query_start_loc=torch.tensor(query_start, dtype=torch.int32),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
            logits_indices=torch.tensor(logits_indices, dtype=torch.int64),
        )
        return (
            torch.tensor(input_ids, dtype=torch.int64),
            torch.tensor(positions, dtype=torch.int64),
            meta,
            sampling_rows,
        )

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> tuple[torch.Tensor, list[int]]:
        """Logits [num_sampling, vocab] (float32) and the batch rows they belong to."""
        self._use_own_threads()
        self.copy_blocks(batch.block_copies)
        input_ids, positions, meta, sampling_rows = self.prepare(batch)
        logits = self.model(input_ids, positions, self.kv_caches, meta)
        return logits, sampling_rows
