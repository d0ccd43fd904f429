"""Torch references of the attention operators: the definition of correct for every backend.

Cache layout and batch semantics are those of ``llm.kernels.attention`` (the dispatch
module); the Triton kernels and the CPU decode path are tested against these.
"""

from __future__ import annotations

import torch

from llm.kernels.kv_quant import dequantize, quantize_rows
from llm.kernels.step_cache import StepCache


def write_kv_cache_ref(
    key, value, k_cache, v_cache, slot_mapping, k_scale=None, v_scale=None
) -> None:
    """Torch reference for :func:`write_kv_cache`; the caches may have any strides (CPU head-major).

    With ``k_scale``/``v_scale`` [num_blocks, block_size, num_kv_heads] the caches are
    quantised (``llm.kernels.kv_quant``): each row is stored with its own scale.
    """
    blocks, offsets, valid = _slot_index(slot_mapping, k_cache.shape[1])
    if valid is not None:
        key, value = key[valid], value[valid]
    for rows, cache, scales in ((key, k_cache, k_scale), (value, v_cache, v_scale)):
        if scales is None:
            cache[blocks, offsets] = rows.to(cache.dtype)
        else:
            cache[blocks, offsets], scales[blocks, offsets] = quantize_rows(rows, cache.dtype)


_slots = StepCache()


def _slot_index(slot_mapping: torch.Tensor, block_size: int):
    """(block, offset, valid rows or None) of each slot, derived once per step (``StepCache``)."""

    def compute():
        valid = None
        slots = slot_mapping
        if len(slots) and int(slots.min()) < 0:  # padding rows are not stored
            valid = slots >= 0
            slots = slots[valid]
        return slots // block_size, slots % block_size, valid

    return _slots.get((slot_mapping, block_size), compute)


def first_visible_block(first_query_pos: int, sliding_window: int | None, block_size: int) -> int:
    """First block a query at ``first_query_pos`` or later can read (0 without a window).

    Block-table entries before it may hold a placeholder for a block the engine gave back.
    """
    if sliding_window is None:
        return 0
    return max(0, first_query_pos - sliding_window + 1) // block_size


def paged_attention_ref(
    query,
    k_cache,
    v_cache,
    block_tables,
    query_start_loc,
    seq_lens,
    scale,
    sliding_window=None,
    sinks=None,
    k_scale=None,
    v_scale=None,
) -> torch.Tensor:
    """Torch reference for :func:`paged_attention`: one sequence at a time, fp32 softmax.

    ``k_scale``/``v_scale`` (quantised caches) dequantise the gathered rows first.
    """
    num_heads = query.shape[1]
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    out = torch.empty_like(query)
    starts = query_start_loc.tolist()
    lengths = seq_lens.tolist()
    for i, seq_len in enumerate(lengths):
        q_start, q_end = starts[i], starts[i + 1]
        q_len = q_end - q_start
        if q_len == 0:
            continue
        num_blocks = (seq_len + block_size - 1) // block_size
        # a sliding window reads from the first block its first query sees: earlier table
        # entries may be dropped blocks (``NULL_BLOCK``)
        first_block = first_visible_block(seq_len - q_len, sliding_window, block_size)
        base = first_block * block_size
        blocks = block_tables[i, first_block:num_blocks].long()
        keys = _read(k_cache, k_scale, blocks, seq_len - base)
        values = _read(v_cache, v_scale, blocks, seq_len - base)
        keys = keys.repeat_interleave(group, dim=1)
        values = values.repeat_interleave(group, dim=1)
        q = query[q_start:q_end].float()
        scores = torch.einsum("qhd,khd->hqk", q, keys) * scale
        q_pos = torch.arange(seq_len - q_len, seq_len, device=query.device)
        k_pos = torch.arange(base, seq_len, device=query.device)
        visible = k_pos[None, :] <= q_pos[:, None]
        if sliding_window is not None:
            visible &= k_pos[None, :] > q_pos[:, None] - sliding_window
        scores = scores.masked_fill(~visible, float("-inf"))
        if sinks is not None:
            sink_logits = sinks.float().view(num_heads, 1, 1).expand(num_heads, q_len, 1)
            probs = torch.softmax(torch.cat([scores, sink_logits], dim=-1), dim=-1)[..., :-1]
        else:
            probs = torch.softmax(scores, dim=-1)
        out[q_start:q_end] = torch.einsum("hqk,khd->qhd", probs, values).to(query.dtype)
    return out


def _read(cache, scales, blocks, seq_len) -> torch.Tensor:
    """fp32 [seq_len, num_kv_heads, head_dim]: a sequence's cached rows, dequantised if need be."""
    num_kv_heads, head_dim = cache.shape[2], cache.shape[3]
    rows = cache[blocks].reshape(-1, num_kv_heads, head_dim)[:seq_len]
    if scales is None:
        return rows.float()
    return dequantize(rows, scales[blocks].reshape(-1, num_kv_heads)[:seq_len])
