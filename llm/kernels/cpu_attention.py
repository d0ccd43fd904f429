"""Paged attention for CPU tensors: the fused C++ kernel, or decodes in one vectorised pass.

With the fused CPU kernels (``llm.kernels.cpu_ext``, bf16 or fp32 caches) every query row of
the step, decode or prefill, is one task of the C++ kernel: the row against its sequence's
keys up to its own position, read in place from the paged cache.

Otherwise (no kernels, quantised caches) it is torch. The reference loops over sequences
(a dozen small ops each, per layer), which makes Python overhead dominate CPU decode with
many sequences. Here every single-token query (a decode) is handled together: the blocks
of all decoding sequences are gathered into a padded [num_seqs, max_len] key/value view
and attended with batched einsums, GQA by grouping query heads per KV head. Prefill
chunks (several queries) are rare per step and compute-bound: each goes through one
``scaled_dot_product_attention`` call. Same signature and semantics as
``llm.kernels.attention_ref.paged_attention_ref``.

Quantised caches (``k_scale``/``v_scale`` given, ``llm.kernels.kv_quant``): decode gathers
the int8/fp8 rows and their scales (half the bytes of bf16), converts the rows to the
query's dtype and folds the scales into the fp32 scores and probabilities; prefill
dequantises the gathered rows for SDPA.
"""

from __future__ import annotations

import torch

from llm.kernels import cpu_ext
from llm.kernels.attention_ref import first_visible_block, paged_attention_ref
from llm.kernels.step_cache import StepCache

# head_dim values the C++ decode kernel is instantiated for (others take the torch path)
FUSED_HEAD_DIMS = (16, 32, 64, 96, 128, 256)

_plan = StepCache()  # per step: the decode rows, gather index and padding mask every layer shares


def _step_plan(block_tables, query_start_loc, seq_lens, block_size, sliding_window):
    """(q_lens, decode rows, all_decode, decode mask) for this step's metadata, derived once."""

    def compute():
        q_lens = query_start_loc[1:] - query_start_loc[:-1]
        decode = (q_lens == 1).nonzero().flatten()
        all_decode = len(decode) == len(q_lens)
        mask = (
            _decode_mask(
                block_tables if all_decode else block_tables[decode],
                seq_lens if all_decode else seq_lens[decode],
                block_size,
                sliding_window,
            )
            if len(decode)
            else None
        )
        return q_lens, decode, all_decode, mask

    return _plan.get((block_tables, query_start_loc, seq_lens, block_size, sliding_window), compute)


def _decode_mask(block_tables, seq_lens, block_size, sliding_window):
    """Gather index over whole blocks and the [seqs, padded] mask of positions to hide.

    With a sliding window each sequence gathers only the blocks its window covers, from
    the first one its query sees (earlier entries may be blocks the engine gave back).
    """
    num_blocks = -(-int(seq_lens.max()) // block_size)
    lengths = seq_lens.long()[:, None]
    if sliding_window is not None and sliding_window < (num_blocks - 1) * block_size:
        window_blocks = (sliding_window + block_size - 2) // block_size + 1
        first = (lengths - sliding_window).clamp_min(0) // block_size  # [seqs, 1]
        index = (first + torch.arange(window_blocks)).clamp_max(block_tables.shape[1] - 1)
        tables = block_tables.long().gather(1, index).clamp_min(0).flatten()
        k_pos = first * block_size + torch.arange(window_blocks * block_size)
        hidden = (k_pos >= lengths) | (k_pos <= lengths - 1 - sliding_window)
        return tables, hidden
    # padding entries are masked; index_select copies whole blocks (much faster than [])
    tables = block_tables[:, :num_blocks].long().clamp_min(0).flatten()
    k_pos = torch.arange(num_blocks * block_size)[None, :]
    hidden = k_pos >= lengths
    if sliding_window is not None:
        hidden |= k_pos <= lengths - 1 - sliding_window
    return tables, hidden


def head_major(cache: torch.Tensor) -> torch.Tensor:
    """The cache as [num_kv_heads, num_blocks, block_size, head_dim] (a view, no copy).

    The model runner stores CPU caches head-major (``kv_cache_storage``) so that this view
    is contiguous: gathering a sequence's blocks then yields each head's keys already in a
    row, ready for ``bmm``, with no transpose copy.
    """
    return cache.permute(2, 0, 1, 3)


def _gather(cache: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """[num_kv_heads, len(tables) * block_size, head_dim]: the listed blocks, in order, per head."""
    heads, _, block_size, head_dim = head_major(cache).shape
    return head_major(cache).index_select(1, tables).view(heads, len(tables) * block_size, head_dim)


def _gather_scales(scales: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """[num_kv_heads, len(tables) * block_size] fp32: the scales of the listed blocks, per head.

    Scales are [num_blocks, block_size, num_kv_heads], stored head-major like the cache.
    """
    per_head = scales.permute(2, 0, 1)
    return per_head.index_select(1, tables).reshape(per_head.shape[0], -1)


def _gather_rows(cache, scales, tables, dtype) -> torch.Tensor:
    """``_gather`` in ``dtype``, dequantised when ``scales`` is given."""
    rows = _gather(cache, tables).to(dtype)
    if scales is None:
        return rows
    return rows.mul_(_gather_scales(scales, tables).to(dtype)[..., None])


def paged_attention_cpu(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    sinks: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    fused = cpu_ext.for_tensor(query, "decode_attention") if k_scale is None else None
    if fused is not None and k_cache.dtype == query.dtype and query.shape[-1] in FUSED_HEAD_DIMS:
        # the C++ kernel reads each sequence's blocks in place, one task per query row and
        # KV head: decodes and prefill rows alike, each row against the keys up to its own
        # position (so a prompt's causal half, no more; measured against the SDPA path in
        # docs/llm_engine_cpu.md)
        tables, lens = row_tables_and_lens(block_tables, query_start_loc, seq_lens)
        window = -1 if sliding_window is None else sliding_window
        return fused.decode_attention(
            query.contiguous(), k_cache, v_cache, tables, lens, scale, window, sinks
        )
    q_lens, decode, all_decode, mask = _step_plan(
        block_tables, query_start_loc, seq_lens, k_cache.shape[1], sliding_window
    )
    scales = (k_scale, v_scale)
    if all_decode:
        return _decode_attention(query, k_cache, v_cache, mask, scale, sinks, scales)
    out = torch.empty_like(query)
    if len(decode):
        rows = query_start_loc[:-1][decode].long()
        out[rows] = _decode_attention(query[rows], k_cache, v_cache, mask, scale, sinks, scales)
    starts = query_start_loc.tolist()
    for i in (q_lens > 1).nonzero().flatten().tolist():
        span = slice(starts[i], starts[i + 1])
        out[span] = _prefill_attention(
            query[span],
            k_cache,
            v_cache,
            block_tables[i],
            int(seq_lens[i]),
            scale,
            sliding_window,
            sinks,
            scales,
        )
    return out


def row_tables_and_lens(block_tables, query_start_loc, seq_lens):
    """(int32 tables, int32 lengths) per query row, once per step: row r of sequence s at
    position p gets s's block table and length p + 1, so every row (a decode or a prefill
    row) is one query against its visible keys."""

    def compute():
        q_lens = query_start_loc[1:] - query_start_loc[:-1]
        rows = int(query_start_loc[-1])
        if rows == len(q_lens):  # decodes only: one row per sequence
            return block_tables.to(torch.int32).contiguous(), seq_lens.to(torch.int32).contiguous()
        seq_of_row = torch.repeat_interleave(torch.arange(len(q_lens)), q_lens.long())
        offset_in_chunk = torch.arange(rows) - query_start_loc[:-1].long()[seq_of_row]
        first_position = (seq_lens - q_lens).long()[seq_of_row]
        lens = (first_position + offset_in_chunk + 1).to(torch.int32)
        return block_tables[seq_of_row].to(torch.int32).contiguous(), lens

    return _fused.get((block_tables, query_start_loc, seq_lens), compute)


_fused = StepCache()  # the fused path's per-row tables and lengths (separate from ``_plan``)


PREFILL_QUERY_CHUNK = 64


def _prefill_attention(
    query, k_cache, v_cache, block_table, seq_len, scale, sliding_window, sinks, scales
):
    """A chunk of q_len queries (the last positions of seq_len) against its cached context.

    Without sinks this is ``scaled_dot_product_attention`` (oneDNN/flash on CPU: no fp32
    [heads, q, k] score tensor is materialised) over slices of ``PREFILL_QUERY_CHUNK``
    queries, each against only the keys it can see: the CPU flash kernel works in
    512-key blocks, so for prompts of a few hundred tokens it computed the whole causal
    square; slicing skips the masked half (measured 1 thread, 400 tokens, 9 heads: 3.0 vs
    4.2 ms per layer). Sinks (gpt-oss) have no SDPA equivalent and use the reference.
    """
    q_len = query.shape[0]
    if sinks is not None:
        return paged_attention_ref(
            query,
            k_cache,
            v_cache,
            block_table[None],
            torch.tensor([0, q_len]),
            torch.tensor([seq_len]),
            scale,
            sliding_window,
            sinks,
            *scales,
        )
    block_size = k_cache.shape[1]
    first = seq_len - q_len  # position of the first query
    first_block = first_visible_block(first, sliding_window, block_size)
    base = first_block * block_size  # position of the first key gathered
    tables = block_table[first_block : -(-seq_len // block_size)].long()
    # [1, kv_heads, seq_len - base, d]
    keys = _gather_rows(k_cache, scales[0], tables, query.dtype)[:, : seq_len - base][None]
    values = _gather_rows(v_cache, scales[1], tables, query.dtype)[:, : seq_len - base][None]
    queries = query.transpose(0, 1)[None]  # [1, heads, q_len, d]
    out = torch.empty_like(queries)
    for start in range(0, q_len, PREFILL_QUERY_CHUNK):
        end = min(q_len, start + PREFILL_QUERY_CHUNK)
        k_end = first + end  # keys after the chunk's last query are never visible
        k_start = max(0, first + start - sliding_window + 1) if sliding_window is not None else 0
        q_pos = torch.arange(first + start, first + end)[:, None]
        k_pos = torch.arange(k_start, k_end)[None, :]
        visible = k_pos <= q_pos
        if sliding_window is not None:
            visible &= k_pos > q_pos - sliding_window
        out[:, :, start:end] = torch.nn.functional.scaled_dot_product_attention(
            queries[:, :, start:end],
            keys[:, :, k_start - base : k_end - base],
            values[:, :, k_start - base : k_end - base],
            attn_mask=visible,
            scale=scale,
            enable_gqa=True,
        )
    return out[0].transpose(0, 1)


def _decode_attention(query, k_cache, v_cache, mask, scale, sinks, scales=(None, None)):
    """One query per sequence (its last position) against its whole cached context.

    The gathered K/V are [kv_heads, seqs, len, head_dim] (head-major, see ``head_major``),
    so both products are plain ``bmm`` calls over kv_heads * seqs with G = heads/kv_heads
    query rows each (a strided 4-d ``matmul`` ran several times slower here). The two
    matmuls run in the cache's dtype (bf16 uses the CPU's bf16 units; fp32 stays fp32);
    scores, mask and softmax are fp32. A quantised cache's rows are converted to the
    query's dtype for the matmuls, its K scales multiply the scores and its V scales the
    probabilities (per key position), which is exact: (q . k_i) s_i = q . (s_i k_i).
    """
    num_seqs, num_heads, head_dim = query.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    tables, hidden = mask
    padded = hidden.shape[1]
    k_scale, v_scale = scales
    compute = k_cache.dtype if k_scale is None else query.dtype
    keys = _gather(k_cache, tables).to(compute).view(num_kv_heads * num_seqs, padded, head_dim)
    values = _gather(v_cache, tables).to(compute).view(num_kv_heads * num_seqs, padded, head_dim)
    q = (
        query.to(compute)
        .view(num_seqs, num_kv_heads, group, head_dim)
        .transpose(0, 1)
        .reshape(num_kv_heads * num_seqs, group, head_dim)
    )
    scores = (
        torch.bmm(q, keys.transpose(1, 2))
        .float()
        .mul_(scale)
        .view(num_kv_heads, num_seqs, group, padded)
    )
    if k_scale is not None:
        scores.mul_(_gather_scales(k_scale, tables).view(num_kv_heads, num_seqs, 1, padded))
    scores.masked_fill_(hidden[None, :, None, :], float("-inf"))
    if sinks is not None:
        sink = sinks.float().view(num_kv_heads, 1, group, 1).expand(-1, num_seqs, -1, 1)
        probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    else:
        probs = torch.softmax(scores, dim=-1)
    if v_scale is not None:
        probs = probs * _gather_scales(v_scale, tables).view(num_kv_heads, num_seqs, 1, padded)
    probs = probs.to(compute).reshape(num_kv_heads * num_seqs, group, padded)
    out = torch.bmm(probs, values).view(num_kv_heads, num_seqs, group, head_dim)
    return out.transpose(0, 1).reshape(num_seqs, num_heads, head_dim).to(query.dtype)
