"""Tensors in, logits out: owns the paged KV cache and lays out each mixed batch.

The runner turns a ``ScheduledBatch`` into the flat token batch and ``AttentionMetadata``
of the model contract (``llm.models.base``), applies the block copies that copy-on-write
asked for, runs the model under ``inference_mode`` and returns one row of logits per
sequence that samples this step (those whose new tokens reach their end).

Everything lives on the configured device (``EngineConfig.device``): weights (moved once
here if the loader left them elsewhere), the KV cache, the step's metadata (built once per
step on the host, staged through one pinned buffer and copied with one non-blocking copy)
and the logits. Each forward runs under a ``KernelPolicy`` naming the kernel backend and
the device, so a tensor left on the wrong device fails loudly in the kernel that gets it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from itertools import chain

import torch

from llm.engine.config import EngineConfig, resolve_device
from llm.engine.decode_graphs import DecodeGraphs
from llm.engine.kv_groups import KVGroups
from llm.engine.scheduler import ScheduledBatch
from llm.kernels.backend import KernelPolicy, use_policy
from llm.kernels.kv_quant import (
    SCALE_DTYPE,
    KVCacheTensor,
    QuantizedKVCache,
    cache_tensors,
    is_quantised,
    kv_storage_dtype,
    slot_bytes_per_head,
)
from llm.models.base import AttentionMetadata, CausalLM, KVCacheSpec

log = logging.getLogger(__name__)


def kv_block_bytes(model: CausalLM, block_size: int, kv_dtype: str = "auto") -> int:
    """Bytes one block takes across all layer slots, K and V, in ``kv_dtype`` (scales included).

    One slot per layer position of a KV group (``llm.engine.kv_groups``): for a model with
    one attention type that is every layer; gpt-oss (sliding + full) needs half as many.
    """
    return kv_spec_block_bytes(model.kv_cache_spec(), block_size, kv_dtype)


def kv_spec_block_bytes(spec: KVCacheSpec, block_size: int, kv_dtype: str = "auto") -> int:
    """``kv_block_bytes`` for a cache spec (no model needed)."""
    per_head = slot_bytes_per_head(kv_dtype, spec.dtype, spec.head_dim)
    slots = KVGroups.from_spec(spec).num_slots
    return 2 * slots * block_size * spec.num_kv_heads * per_head


def num_kv_blocks_for(model: CausalLM, config: EngineConfig) -> int:
    """``config.num_kv_blocks`` if set, else as many blocks as ``kv_cache_mb`` holds."""
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks
    block_bytes = kv_block_bytes(model, config.block_size, config.kv_dtype)
    return max(1, config.kv_cache_mb * 2**20 // block_bytes)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes the weights hold: every parameter's and buffer's storage, once (tied weights
    once; MXFP4 experts packed, as they are held; a plain weight ``Linear.release_dense``
    freed, nothing), plus the copies CPU projections keep for their kernels (packed bf16,
    4-bit, 8-bit)."""
    kernel_copies: list[torch.Tensor] = []
    for module in model.modules():
        held = getattr(module, "kernel_tensors", None)  # llm.models.llama.Linear's
        if callable(held):
            kernel_copies += held()
    storages: dict[tuple, int] = {}
    for t in chain(model.parameters(), model.buffers(), kernel_copies):
        if t.layout != torch.strided or t.is_mkldnn:  # oneDNN's packed weights: no storage
            storages[("opaque", id(t))] = t.numel() * t.element_size()
            continue
        storage = t.untyped_storage()
        storages[(t.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def kv_cache_storage(
    shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device | None = None
) -> torch.Tensor:
    """A zeroed cache of logical shape [num_blocks, block_size, num_kv_heads, head_dim].

    On the CPU the memory is laid out head-major ([heads, blocks, block_size, head_dim]) and
    returned as a permuted view: the CPU attention gathers blocks per head with no
    transpose copy (``llm.kernels.cpu_attention.head_major``). The logical shape is the
    kernels' contract; on CUDA the Triton kernels want it contiguous, so it is plain there.
    """
    device = device or torch.device("cpu")
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    blocks, block_size, heads, head_dim = shape
    return torch.zeros((heads, blocks, block_size, head_dim), dtype=dtype).permute(1, 2, 0, 3)


def step_inputs(
    staged: list[torch.Tensor], layer_group: tuple[int, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
    """Ids, positions and metadata from the staged rows ``ModelRunner.prepare`` lays out.

    Seven rows (ids, positions, slot mapping, block tables, query starts, lengths, logits
    rows), then a slot mapping and block tables per further KV group (``layer_group``
    names each layer's group; see ``llm.engine.kv_groups``). Apart so that a
    tensor-parallel worker, which receives the same rows from rank 0, builds exactly the
    same inputs (``llm.engine.tensor_parallel``).
    """
    ids, pos, slot_mapping, flat_tables, starts, lens, logits_rows = staged[:7]
    starts, lens = starts.to(torch.int32), lens.to(torch.int32)
    groups = [
        AttentionMetadata(
            slot_mapping=slots,
            block_tables=tables.view(lens.shape[0], -1).to(torch.int32),
            query_start_loc=starts,
            seq_lens=lens,
            logits_indices=logits_rows,
        )
        for slots, tables in [
            (slot_mapping, flat_tables),
            *zip(staged[7::2], staged[8::2], strict=True),
        ]
    ]
    if len(groups) == 1:
        return ids, pos, groups[0]
    return ids, pos, replace(groups[0], groups=tuple(groups), layer_group=layer_group)


def kv_cache_for(
    shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device
) -> KVCacheTensor:
    """One layer's K (or V) cache: a tensor, or int8/fp8 values with their scales.

    The scales [num_blocks, block_size, num_kv_heads] are laid out like the values
    (head-major on CPU), as the last dimension of ``kv_cache_storage`` dropped.
    """
    data = kv_cache_storage(shape, dtype, device)
    if not is_quantised(dtype):
        return data
    scale = kv_cache_storage((*shape[:3], 1), SCALE_DTYPE, device)[..., 0]
    return QuantizedKVCache(data, scale)


class ModelRunner:
    """Runs the model over one scheduled step against the paged KV caches.

    ``kv_slots`` holds one (K, V) pair per layer slot; ``kv_caches[layer]`` is the pair of
    that layer's slot (``llm.engine.kv_groups``), which the model receives.

    ``num_blocks`` None leaves the cache unallocated: the engine then profiles
    (``profile_step``) and calls ``allocate_kv_cache`` with what the planner allows.
    """

    def __init__(self, model: CausalLM, config: EngineConfig, num_blocks: int | None) -> None:
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.dtype = model.kv_cache_spec().dtype
        self.kv_dtype = kv_storage_dtype(config.kv_dtype, self.dtype)
        self.kv_groups = KVGroups.from_spec(model.kv_cache_spec())
        self.num_threads = config.num_threads
        self._threads_set_in: int | None = None  # the thread whose torch threads we last set
        prepare = getattr(model, "prepare_for_inference", None)
        if prepare is not None and self.device.type == "cpu":  # pack CPU weights once loaded
            prepare()
            for layer, limit in getattr(model, "quantised_row_limits", {}).items():
                log.info("quantised matmul %s: up to %d rows (measured)", layer, limit["max_rows"])
            if getattr(model, "layer_stack", None) is not None:
                log.info("each step runs all layers in one C++ call (LayerStack)")
        self.block_size = config.block_size
        self.kernel_policy = KernelPolicy(backend=config.kernels, device=self.device)
        self.weight_bytes = weight_bytes(model)
        self._pinned: torch.Tensor | None = None  # host staging buffer of the step metadata
        self.kv_slots: list[tuple[KVCacheTensor, KVCacheTensor]] = []
        self.kv_caches: list[tuple[KVCacheTensor, KVCacheTensor]] = []
        self.num_blocks = 0
        self.decode_graphs: DecodeGraphs | None = None
        if num_blocks is not None:
            self.allocate_kv_cache(num_blocks)

    def enable_decode_graphs(self, max_num_seqs: int, max_model_len: int) -> None:
        """Serve pure decode steps from padded static inputs: CUDA graphs on CUDA, eager elsewhere.

        Call once the KV cache is final (the graphs hold its address).
        """
        self.decode_graphs = DecodeGraphs(
            lambda ids, positions, meta: self.model(ids, positions, self.kv_caches, meta),
            max_num_seqs,
            -(-max_model_len // self.block_size),
            self.device,
            replay=self.device.type == "cuda",
            layer_group=self.kv_groups.layer_group if self.kv_groups.num_groups > 1 else (),
        )
        with torch.inference_mode(), use_policy(self.kernel_policy):
            self.decode_graphs.capture()

    def allocate_kv_cache(self, num_blocks: int) -> None:
        spec = self.model.kv_cache_spec()
        shape = (num_blocks, self.block_size, spec.num_kv_heads, spec.head_dim)
        self.kv_slots = self.kv_caches = []  # drop any profiling cache before allocating
        self.kv_slots = [
            (
                kv_cache_for(shape, self.kv_dtype, self.device),
                kv_cache_for(shape, self.kv_dtype, self.device),
            )
            for _ in range(self.kv_groups.num_slots)
        ]
        self.kv_caches = [self.kv_slots[slot] for slot in self.kv_groups.layer_slot]
        self.num_blocks = num_blocks

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
        """Apply copy-on-write: block ``dst`` gets ``src``'s K/V in every layer slot."""
        if not copies:
            return
        src, dst = self._stage([[c[0] for c in copies], [c[1] for c in copies]])
        for k_cache, v_cache in self.kv_slots:
            for tensor in (*cache_tensors(k_cache), *cache_tensors(v_cache)):
                tensor[dst] = tensor[src]

    def _stage(self, rows: list[list[int]]) -> list[torch.Tensor]:
        """Host int lists -> int64 tensors on the device, with one host-to-device copy.

        On CUDA the values go through a pinned buffer kept across steps and a non-blocking
        copy, so the forward pass queues behind it without a host synchronisation. The
        buffer is rewritten only next step, after sampling has synchronised on the logits.
        """
        flat = torch.tensor(list(chain.from_iterable(rows)), dtype=torch.int64)
        if self.device.type != "cpu":
            if self._pinned is None or self._pinned.numel() < flat.numel():
                size = max(flat.numel(), 2 * (0 if self._pinned is None else self._pinned.numel()))
                self._pinned = torch.empty(size, dtype=torch.int64, pin_memory=True)
            staging = self._pinned[: flat.numel()]
            staging.copy_(flat)
            flat = staging.to(self.device, non_blocking=True)
        return list(flat.split([len(r) for r in rows]))

    def prepare(
        self, batch: ScheduledBatch
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        """Flat ids/positions, the metadata, and which batch rows sample this step.

        With several KV groups each gets its own slot mapping and block tables (group 0's
        are the metadata's own fields; ``AttentionMetadata.groups`` holds all).
        """
        bs = self.block_size
        num_groups = self.kv_groups.num_groups
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[list[int]] = [[] for _ in range(num_groups)]
        query_start = [0]
        seq_lens: list[int] = []
        logits_indices: list[int] = []
        sampling_rows: list[int] = []
        for row, (seq, num_new) in enumerate(zip(batch.seqs, batch.num_new_tokens, strict=True)):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + num_new
            input_ids.extend(seq.token_ids[start:end])
            if num_new == 1:
                positions.append(start)
                for group in range(num_groups):
                    slots[group].append(seq.block_tables[group][start // bs] * bs + start % bs)
            else:
                span = range(start, end)
                positions.extend(span)
                for group in range(num_groups):
                    table = seq.block_tables[group]
                    slots[group].extend(table[p // bs] * bs + p % bs for p in span)
            query_start.append(query_start[-1] + num_new)
            seq_lens.append(end)
            if end == len(seq):
                logits_indices.append(query_start[-1] - 1)
                sampling_rows.append(row)
        max_blocks = max(len(seq.block_tables[0]) for seq in batch.seqs)
        rows = [input_ids, positions, [], [], query_start, seq_lens, logits_indices]
        for group in range(num_groups):
            padded = [
                seq.block_tables[group] + [-1] * (max_blocks - len(seq.block_tables[group]))
                for seq in batch.seqs
            ]
            group_rows = [slots[group], list(chain.from_iterable(padded))]
            if group == 0:
                rows[2:4] = group_rows
            else:
                rows.extend(group_rows)
        staged = self._stage(rows)
        return (*step_inputs(staged, self.kv_groups.layer_group), sampling_rows)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> tuple[torch.Tensor, list[int]]:
        """Logits [num_sampling, vocab] (float32, on the device) and the batch rows they belong to."""
        self._use_own_threads()
        self.copy_blocks(batch.block_copies)
        input_ids, positions, meta, sampling_rows = self.prepare(batch)
        graphs = self.decode_graphs
        with use_policy(self.kernel_policy):
            if (
                graphs is not None
                and len(sampling_rows) == len(batch)
                and all(n == 1 for n in batch.num_new_tokens)
                and graphs.accepts(len(batch), meta.block_tables.shape[1])
            ):
                logits = graphs.run(input_ids, positions, meta)
            else:
                logits = self.model(input_ids, positions, self.kv_caches, meta)
        return logits, sampling_rows
