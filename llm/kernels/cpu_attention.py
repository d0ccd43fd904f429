"""Paged attention for CPU tensors with the decodes of a batch done in one vectorised pass.

The torch reference loops over sequences (a dozen small ops each, per layer), which makes
Python overhead dominate CPU decode with many sequences. Here every single-token query
(a decode) is handled together: the blocks of all decoding sequences are gathered into a
padded [num_seqs, max_len] key/value view and attended with batched einsums, GQA by
grouping query heads per KV head. Prefill chunks (several queries) are rare per step and
compute-bound, so they keep the reference path. Same signature and semantics as
``llm.kernels.attention.paged_attention_ref``.
"""

from __future__ import annotations

import torch


class _StepPlan:
    """What every layer of one step shares: the decode rows, gather index and padding mask.

    A forward pass calls attention once per layer with the same metadata tensors; deriving
    the plan once instead of per layer saves a dozen small ops (and a host sync) per layer.
    Keyed on the identity of those tensors, which the plan holds so they cannot be reused.
    """

    def __init__(self) -> None:
        self.key: tuple = ()
        self.value: tuple = ()

    def get(self, block_tables, query_start_loc, seq_lens, block_size, sliding_window):
        key = (block_tables, query_start_loc, seq_lens, block_size, sliding_window)
        if len(self.key) == len(key) and all(a is b for a, b in zip(self.key, key, strict=True)):
            return self.value
        q_lens = query_start_loc[1:] - query_start_loc[:-1]
        decode = (q_lens == 1).nonzero().flatten()
        all_decode = len(decode) == len(q_lens)
        mask = _decode_mask(block_tables if all_decode else block_tables[decode],
                            seq_lens if all_decode else seq_lens[decode], block_size, sliding_window) \
            if len(decode) else None
        self.key, self.value = key, (q_lens, decode, all_decode, mask)
        return self.value


_plan = _StepPlan()


def _decode_mask(block_tables, seq_lens, block_size, sliding_window):
    """Gather index over whole blocks and the [seqs, padded] mask of positions to hide."""
    num_blocks = -(-int(seq_lens.max()) // block_size)
    padded = num_blocks * block_size
    # padding entries are masked; index_select copies whole blocks (much faster than [])
    tables = block_tables[:, :num_blocks].long().clamp_min(0).flatten()
    k_pos = torch.arange(padded)
    lengths = seq_lens.long()[:, None]
    hidden = k_pos[None, :] >= lengths
    if sliding_window is not None:
        hidden |= k_pos[None, :] <= lengths - 1 - sliding_window
    return tables, hidden


def paged_attention_cpu(query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                        block_tables: torch.Tensor, query_start_loc: torch.Tensor, seq_lens: torch.Tensor,
                        scale: float, sliding_window: int | None = None,
                        sinks: torch.Tensor | None = None) -> torch.Tensor:
    from llm.kernels.attention import paged_attention_ref

    q_lens, decode, all_decode, mask = _plan.get(block_tables, query_start_loc, seq_lens, k_cache.shape[1],
                                                 sliding_window)
    if all_decode:
        return _decode_attention(query, k_cache, v_cache, mask, scale, sinks)
    if len(decode) == 0:
        return paged_attention_ref(query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale,
                                   sliding_window, sinks)
    # mixed step: decodes vectorised, prefill chunks through the reference
    out = torch.empty_like(query)
    rows = query_start_loc[:-1][decode].long()
    out[rows] = _decode_attention(query[rows], k_cache, v_cache, mask, scale, sinks)
    prefill = (q_lens > 1).nonzero().flatten().tolist()
    starts = query_start_loc.tolist()
    for i in prefill:
        q = query[starts[i]:starts[i + 1]]
        out[starts[i]:starts[i + 1]] = paged_attention_ref(
            q, k_cache, v_cache, block_tables[i:i + 1], torch.tensor([0, len(q)], dtype=torch.int32),
            seq_lens[i:i + 1], scale, sliding_window, sinks)
    return out


def _decode_attention(query, k_cache, v_cache, mask, scale, sinks):
    """One query per sequence (its last position) against its whole cached context.

    The gathered K/V are laid out [seqs * kv_heads, len, head_dim] so both products are
    plain ``bmm`` calls with G = heads/kv_heads query rows per batch entry (a strided
    4-d ``matmul`` over a permuted view ran several times slower here). The two matmuls
    run in the cache's dtype (bf16 uses the CPU's bf16 units; fp32 stays fp32); scores,
    mask and softmax are fp32.
    """
    num_seqs, num_heads, head_dim = query.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    tables, hidden = mask
    padded = hidden.shape[1]
    keys = (k_cache.index_select(0, tables).view(num_seqs, padded, num_kv_heads, head_dim)
            .transpose(1, 2).reshape(num_seqs * num_kv_heads, padded, head_dim))
    values = (v_cache.index_select(0, tables).view(num_seqs, padded, num_kv_heads, head_dim)
              .transpose(1, 2).reshape(num_seqs * num_kv_heads, padded, head_dim))
    q = query.to(k_cache.dtype).reshape(num_seqs * num_kv_heads, group, head_dim)
    scores = torch.bmm(q, keys.transpose(1, 2)).float().mul_(scale).view(num_seqs, num_kv_heads, group, padded)
    scores.masked_fill_(hidden[:, None, None, :], float("-inf"))
    if sinks is not None:
        sink = sinks.float().view(1, num_kv_heads, group, 1).expand(num_seqs, -1, -1, 1)
        probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    else:
        probs = torch.softmax(scores, dim=-1)
    probs = probs.to(v_cache.dtype).reshape(num_seqs * num_kv_heads, group, padded)
    out = torch.bmm(probs, values)                                                             # (S K) G D
    return out.view(num_seqs, num_heads, head_dim).to(query.dtype)
