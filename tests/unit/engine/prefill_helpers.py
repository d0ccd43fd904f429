"""One prompt through a model's forward in a single prefill step, on fresh paged caches."""

from __future__ import annotations

import torch

from llm.models.base import AttentionMetadata


def prefill_once(
    model, ids: list[int], sampled: list[int], block_size: int = 16
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """(logits of the rows ``sampled``, the per-layer K/V caches the step wrote)."""
    n, spec = len(ids), model.kv_cache_spec()
    blocks = -(-n // block_size)
    caches = [
        tuple(torch.zeros(blocks, block_size, spec.num_kv_heads, spec.head_dim) for _ in range(2))
        for _ in range(spec.num_layers)
    ]
    meta = AttentionMetadata(
        slot_mapping=torch.arange(n),
        block_tables=torch.arange(blocks, dtype=torch.int32)[None],
        query_start_loc=torch.tensor([0, n], dtype=torch.int32),
        seq_lens=torch.tensor([n], dtype=torch.int32),
        logits_indices=torch.tensor(sampled, dtype=torch.long),
    )
    with torch.inference_mode():
        return model(torch.tensor(ids), torch.arange(n), caches, meta), caches
