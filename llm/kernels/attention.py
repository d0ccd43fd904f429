"""Paged attention over a block-table KV cache, and the write of new K/V into that cache.

Cache layout (one pair per layer): ``k_cache``/``v_cache`` [num_blocks, block_size,
num_kv_heads, head_dim]. A sequence's tokens live in the blocks its block table lists,
in order; token t of a sequence is at (block_table[t // block_size], t % block_size).

One call covers a whole mixed batch: prefill chunks and single-token decodes are
concatenated along the token axis (varlen). The model writes the step's K/V into the
cache first, then attends, so every query reads all of its keys from the cache.
"""

from __future__ import annotations

import torch

from llm.kernels.step_cache import StepCache


def _use_triton(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda


def write_kv_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Scatter this step's ``key``/``value`` [num_tokens, num_kv_heads, head_dim] into the cache.

    ``slot_mapping`` [num_tokens] (int64) holds block_id * block_size + offset for each
    token; a negative slot means "do not store" (padding).
    """
    if _use_triton(key):
        from llm.kernels.triton_attention import write_kv_cache_triton

        return write_kv_cache_triton(key, value, k_cache, v_cache, slot_mapping)
    return write_kv_cache_ref(key, value, k_cache, v_cache, slot_mapping)


def write_kv_cache_ref(key, value, k_cache, v_cache, slot_mapping) -> None:
    """Torch reference for :func:`write_kv_cache`; the caches may have any strides (CPU head-major)."""
    blocks, offsets, valid = _slot_index(slot_mapping, k_cache.shape[1])
    if valid is not None:
        key, value = key[valid], value[valid]
    k_cache[blocks, offsets] = key.to(k_cache.dtype)
    v_cache[blocks, offsets] = value.to(v_cache.dtype)


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


def paged_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of a varlen batch of queries against the paged cache.

    - ``query`` [num_tokens, num_heads, head_dim]: sequence i owns rows
      ``query_start_loc[i]:query_start_loc[i+1]``; they are the *last* q_len_i positions
      of its ``seq_lens[i]`` tokens (a decode has q_len 1; a prefill chunk q_len > 1).
    - ``block_tables`` [num_seqs, max_blocks] int32; entries past a sequence's blocks are
      ignored (pad with anything, e.g. -1).
    - GQA: num_heads must be a multiple of num_kv_heads; query head h reads KV head
      h // (num_heads // num_kv_heads).
    - ``sliding_window`` w: the query at position p sees keys at positions p-w+1 .. p.
    - ``sinks`` [num_heads] (gpt-oss): a learned logit per head that joins the softmax's
      denominator but has no value, so attention may "rest" on nothing.
    Returns [num_tokens, num_heads, head_dim] in ``query``'s dtype.
    """
    if _use_triton(query):
        from llm.kernels.triton_attention import paged_attention_triton

        return paged_attention_triton(
            query,
            k_cache,
            v_cache,
            block_tables,
            query_start_loc,
            seq_lens,
            scale,
            sliding_window,
            sinks,
        )
    if query.device.type == "cpu":  # decodes batched in one pass (the reference loops per sequence)
        from llm.kernels.cpu_attention import paged_attention_cpu

        return paged_attention_cpu(
            query,
            k_cache,
            v_cache,
            block_tables,
            query_start_loc,
            seq_lens,
            scale,
            sliding_window,
            sinks,
        )
    return paged_attention_ref(
        query,
        k_cache,
        v_cache,
        block_tables,
        query_start_loc,
        seq_lens,
        scale,
        sliding_window,
        sinks,
    )


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
) -> torch.Tensor:
    """Torch reference for :func:`paged_attention`: one sequence at a time, fp32 softmax."""
    num_heads, head_dim = query.shape[1], query.shape[2]
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
        blocks = block_tables[i, :num_blocks].long()
        keys = k_cache[blocks].reshape(-1, num_kv_heads, head_dim)[:seq_len].float()
        values = v_cache[blocks].reshape(-1, num_kv_heads, head_dim)[:seq_len].float()
        keys = keys.repeat_interleave(group, dim=1)
        values = values.repeat_interleave(group, dim=1)
        q = query[q_start:q_end].float()
        scores = torch.einsum("qhd,khd->hqk", q, keys) * scale
        q_pos = torch.arange(seq_len - q_len, seq_len, device=query.device)
        k_pos = torch.arange(seq_len, device=query.device)
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
