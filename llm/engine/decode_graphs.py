"""Decode steps replayed from CUDA graphs, one per padded batch size (``EngineConfig.cuda_graphs``).

A decode step of a large model is hundreds of small kernel launches; on a GPU the launch
overhead alone can exceed the step's HBM time at batch 1. A CUDA graph records the launches
once and replays them with one call. Graphs fix every tensor's address and shape, so:

- the step's inputs are copied into static buffers sized for the largest bucket, and the
  batch is padded up to the next bucket (1, 2, 4, 8, ... ``max_num_seqs``);
- padding rows are harmless: their token writes go nowhere (slot -1), they attend over one
  key of block 0 (``seq_lens`` 1), and their logits are dropped;
- the block table is as wide as ``max_model_len`` needs, so any step fits the same graph
  (the Triton kernels derive their grids from shapes only, never from values);
- with several KV groups (sliding + full layers) each group has its own static slot
  mapping and block table; a sliding group's dropped entries become block 0, never read.

Only pure decode steps (one new token per sequence, every sequence sampling) are replayed;
anything else, or a batch larger than the largest bucket, runs eagerly. ``replay=False``
runs the same padded inputs eagerly: the padding logic is then testable on any device,
and the GPU check compares replay with eager.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from llm.models.base import AttentionMetadata

Forward = Callable[[torch.Tensor, torch.Tensor, AttentionMetadata], torch.Tensor]


def batch_buckets(max_num_seqs: int) -> list[int]:
    """Padded batch sizes: powers of two below ``max_num_seqs``, then ``max_num_seqs``."""
    buckets, size = [], 1
    while size < max_num_seqs:
        buckets.append(size)
        size *= 2
    return [*buckets, max_num_seqs]


class DecodeGraphs:
    """Static decode inputs, padded per bucket; replayed from CUDA graphs when ``replay``."""

    def __init__(
        self,
        forward: Forward,
        max_num_seqs: int,
        max_blocks_per_seq: int,
        device: torch.device,
        replay: bool,
        layer_group: tuple[int, ...] = (),
    ) -> None:
        self.forward = forward
        self.buckets = batch_buckets(max_num_seqs)
        self.replay = replay
        self.device = device
        size = self.buckets[-1]
        i64 = torch.int64
        self.input_ids = torch.zeros(size, dtype=i64, device=device)
        self.positions = torch.zeros(size, dtype=i64, device=device)
        # one slot mapping and block table per KV group (``layer_group`` maps layers to them)
        self.layer_group = layer_group
        num_groups = max(layer_group, default=0) + 1
        self.slot_mappings = [
            torch.full((size,), -1, dtype=i64, device=device) for _ in range(num_groups)
        ]
        self.group_tables = [
            torch.zeros(size, max_blocks_per_seq, dtype=torch.int32, device=device)
            for _ in range(num_groups)
        ]
        self.slot_mapping, self.block_tables = self.slot_mappings[0], self.group_tables[0]
        self.query_start_loc = torch.arange(size + 1, dtype=torch.int32, device=device)
        self.seq_lens = torch.ones(size, dtype=torch.int32, device=device)
        self.logits_indices = torch.arange(size, dtype=i64, device=device)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def accepts(self, num_seqs: int, max_blocks: int) -> bool:
        return num_seqs <= self.buckets[-1] and max_blocks <= self.block_tables.shape[1]

    def bucket(self, num_seqs: int) -> int:
        return next(b for b in self.buckets if b >= num_seqs)

    def _meta(self, bucket: int) -> AttentionMetadata:
        groups = [
            AttentionMetadata(
                slot_mapping=slot_mapping[:bucket],
                block_tables=tables[:bucket],
                query_start_loc=self.query_start_loc[: bucket + 1],
                seq_lens=self.seq_lens[:bucket],
                logits_indices=self.logits_indices[:bucket],
            )
            for slot_mapping, tables in zip(self.slot_mappings, self.group_tables, strict=True)
        ]
        if not self.layer_group:
            return groups[0]
        return replace(groups[0], groups=tuple(groups), layer_group=self.layer_group)

    def _load(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> int:
        """Copy a decode step into the static buffers, padding rows reset; the bucket used."""
        num_seqs = input_ids.shape[0]
        bucket = self.bucket(num_seqs)
        width = meta.block_tables.shape[1]
        self.input_ids[:num_seqs].copy_(input_ids)
        self.input_ids[num_seqs:bucket].zero_()
        self.positions[:num_seqs].copy_(positions)
        self.positions[num_seqs:bucket].zero_()
        for group, (slot_mapping, tables) in enumerate(
            zip(self.slot_mappings, self.group_tables, strict=True)
        ):
            group_meta = meta.groups[group] if meta.groups else meta
            slot_mapping[:num_seqs].copy_(group_meta.slot_mapping)
            slot_mapping[num_seqs:bucket].fill_(-1)
            tables[:bucket].zero_()
            tables[:num_seqs, :width].copy_(group_meta.block_tables.clamp_min(0))
        self.seq_lens[:num_seqs].copy_(meta.seq_lens)
        self.seq_lens[num_seqs:bucket].fill_(1)
        return bucket

    def _run_padded(self, bucket: int) -> torch.Tensor:
        return self.forward(self.input_ids[:bucket], self.positions[:bucket], self._meta(bucket))

    def capture(self) -> None:
        """Record one graph per bucket (after the KV cache is allocated: its address is baked in)."""
        if not self.replay:
            return
        pool = None
        for bucket in reversed(self.buckets):  # largest first: the pool then fits the rest
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up: Triton compiles and autotunes outside capture
                    self._run_padded(bucket)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                output = self._run_padded(bucket)
            pool = graph.pool()
            self._graphs[bucket] = (graph, output)

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Logits [num_seqs, vocab] of a decode step (``accepts`` must hold)."""
        num_seqs = input_ids.shape[0]
        bucket = self._load(input_ids, positions, meta)
        if self.replay and bucket in self._graphs:
            graph, output = self._graphs[bucket]
            graph.replay()
            return output[:num_seqs].clone()
        return self._run_padded(bucket)[:num_seqs]
