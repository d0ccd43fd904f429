"""Triton kernels for the paged KV cache: scatter new K/V into blocks, and attend over them.

Same contract as :mod:`llm.kernels.attention` (the torch references there define what is
correct). Three kernels:

- ``_write_kv_kernel``: one program per new token copies its K and V rows to the slot the
  block manager gave it; a negative slot is padding and stores nothing. For a quantised
  cache (``QUANT``) it stores each row quantised with its own scale
  (``llm.kernels.kv_quant.quantize_rows`` is the definition).
- ``_decode_kernel``: one query token per sequence. A program takes one sequence and one
  KV head and carries *all* query heads of that GQA group as the rows of its tile, so each
  K/V tile is read once per group. The KV range may be split across programs
  (flash-decoding) so that a batch of one still fills the GPU; ``_combine_splits_kernel``
  then merges the partial softmax states.
- ``_prefill_kernel``: a tile of a sequence's new query tokens (times the heads of one GQA
  group) against the cache, causal, for prefill and chunked prefill of varlen batches.
  The flat grid of query tiles is sized from the token count; each program finds its
  sequence by binary search over ``query_start_loc`` (as vLLM's unified attention does).

Nothing here reads a device value on the host, so an engine step can be captured in a
CUDA graph.

Both attention kernels run the same online softmax (``_attend_range``) over KV positions
gathered through the block table one position at a time, so the KV tile size is free of
the cache block size. Scores live in the log2 domain (``exp2``). A learned sink enters as
the initial softmax state: max = sink, denominator = 1, accumulator = 0, which is exactly
an extra logit with no value. With a quantised cache (``QUANT``) the K tile is converted
to the query's dtype and its per-position scales multiply the scores; the V scales
multiply the probabilities before the second dot.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from llm.kernels.kv_quant import QMAX, is_quantised

LOG2E = 1.4426950408889634


# ---------------------------------------------------------------------------- cache write


@triton.jit
def _write_kv_kernel(
    key_ptr,
    value_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_ptr,
    k_scale_ptr,
    v_scale_ptr,
    stride_kt,
    stride_kh,
    stride_kd,
    stride_vt,
    stride_vh,
    stride_vd,
    stride_kcb,
    stride_kcs,
    stride_kch,
    stride_kcd,
    stride_vcb,
    stride_vcs,
    stride_vch,
    stride_vcd,
    stride_sb,
    stride_ss,
    stride_sh,
    cache_block_size,
    num_kv_heads,
    head_dim,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    QUANT: tl.constexpr,
    QMAX: tl.constexpr,
    IS_INT8: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    # a negative slot stores nothing: no head passes the mask. (The interpreter mishandles
    # `tensor_mask & scalar_bool`, so the scalar condition goes through tl.where.)
    heads_to_store = tl.where(slot >= 0, num_kv_heads, 0)
    slot = tl.maximum(slot, 0)
    block = slot // cache_block_size
    offset = slot % cache_block_size
    heads = tl.arange(0, BLOCK_H)[:, None]
    dims = tl.arange(0, BLOCK_D)[None, :]
    mask = (heads < heads_to_store) & (dims < head_dim)
    k = tl.load(key_ptr + token * stride_kt + heads * stride_kh + dims * stride_kd, mask=mask)
    v = tl.load(value_ptr + token * stride_vt + heads * stride_vh + dims * stride_vd, mask=mask)
    if QUANT:
        head_mask = tl.arange(0, BLOCK_H) < heads_to_store
        k, k_scale = _quantize_rows(k, QMAX, IS_INT8)
        v, v_scale = _quantize_rows(v, QMAX, IS_INT8)
        head_ids = tl.arange(0, BLOCK_H)
        tl.store(
            k_scale_ptr + block * stride_sb + offset * stride_ss + head_ids * stride_sh,
            k_scale,
            mask=head_mask,
        )
        tl.store(
            v_scale_ptr + block * stride_sb + offset * stride_ss + head_ids * stride_sh,
            v_scale,
            mask=head_mask,
        )
    tl.store(
        k_cache_ptr
        + block * stride_kcb
        + offset * stride_kcs
        + heads * stride_kch
        + dims * stride_kcd,
        k.to(k_cache_ptr.dtype.element_ty),
        mask=mask,
    )
    tl.store(
        v_cache_ptr
        + block * stride_vcb
        + offset * stride_vcs
        + heads * stride_vch
        + dims * stride_vcd,
        v.to(v_cache_ptr.dtype.element_ty),
        mask=mask,
    )


@triton.jit
def _quantize_rows(x, QMAX: tl.constexpr, IS_INT8: tl.constexpr):
    """(rows of ``x`` [H, D] scaled into ±QMAX, rounded for int8; fp32 scale per row)."""
    x = x.to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(x), 1), 1e-8) / QMAX
    y = tl.minimum(tl.maximum(x / scale[:, None], -QMAX), QMAX)
    if IS_INT8:
        y = tl.where(y >= 0, y + 0.5, y - 0.5)  # the int cast truncates: half away from zero
    return y, scale


def write_kv_cache_triton(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """Triton version of :func:`llm.kernels.attention.write_kv_cache` (same arguments).

    ``k_scale``/``v_scale`` [num_blocks, block_size, num_kv_heads] fp32 make the caches
    quantised (int8 or float8_e4m3fn values, ``llm.kernels.kv_quant``).
    """
    if key.shape != value.shape or key.dim() != 3:
        raise ValueError(
            f"key/value must both be [tokens, kv_heads, head_dim], got {tuple(key.shape)} "
            f"and {tuple(value.shape)}"
        )
    if (
        k_cache.shape != v_cache.shape
        or k_cache.dim() != 4
        or tuple(k_cache.shape[2:]) != tuple(key.shape[1:])
    ):
        raise ValueError(
            f"cache {tuple(k_cache.shape)} does not hold [.., .., {key.shape[1]}, {key.shape[2]}] rows"
        )
    if slot_mapping.shape != (key.shape[0],):
        raise ValueError(
            f"slot_mapping has shape {tuple(slot_mapping.shape)}, expected ({key.shape[0]},)"
        )
    num_tokens, num_kv_heads, head_dim = key.shape
    if num_tokens == 0:
        return
    quant = _quant_flags(k_cache, k_scale, v_scale)
    k_scale_arg = k_scale if k_scale is not None else slot_mapping  # never read unless QUANT
    v_scale_arg = v_scale if v_scale is not None else slot_mapping
    _write_kv_kernel[(num_tokens,)](
        key,
        value,
        k_cache,
        v_cache,
        slot_mapping,
        k_scale_arg,
        v_scale_arg,
        *key.stride(),
        *value.stride(),
        *k_cache.stride(),
        *v_cache.stride(),
        *_scale_strides(k_scale),  # V's scales share K's layout (_quant_flags checks)
        k_cache.shape[1],
        num_kv_heads,
        head_dim,
        BLOCK_H=triton.next_power_of_2(num_kv_heads),
        BLOCK_D=triton.next_power_of_2(head_dim),
        **quant,
    )


def _quant_flags(cache: torch.Tensor, k_scale, v_scale) -> dict:
    """The QUANT/QMAX/IS_INT8 constexprs for a cache of ``cache.dtype`` with these scales."""
    if (k_scale is None) != (v_scale is None):
        raise ValueError("k_scale and v_scale must be given together (a quantised K and V cache)")
    if k_scale is None:
        return dict(QUANT=False, QMAX=1.0, IS_INT8=False)
    if not is_quantised(cache.dtype):
        raise ValueError(
            f"scales given for a {cache.dtype} cache; quantised caches are int8 or fp8"
        )
    if k_scale.shape != cache.shape[:3] or v_scale.shape != cache.shape[:3]:
        raise ValueError(
            f"scales must be {tuple(cache.shape[:3])} (blocks, block_size, kv_heads), got "
            f"{tuple(k_scale.shape)} and {tuple(v_scale.shape)}"
        )
    if k_scale.stride() != v_scale.stride():
        raise ValueError(
            f"K and V scales must share one layout, got strides {k_scale.stride()} and "
            f"{v_scale.stride()}"
        )
    return dict(QUANT=True, QMAX=QMAX[cache.dtype], IS_INT8=cache.dtype == torch.int8)


def _scale_strides(scale: torch.Tensor | None) -> tuple[int, int, int]:
    return tuple(scale.stride()) if scale is not None else (0, 0, 0)  # type: ignore[return-value]


# ---------------------------------------------------------------------------- attention


@triton.jit
def _attend_range(
    acc,
    m_i,
    l_i,
    q,
    k_cache_ptr,
    v_cache_ptr,
    block_table_ptr,
    kv_head,
    q_pos,
    kv_lo,
    kv_hi,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vs,
    stride_vh,
    stride_vd,
    k_scale_ptr,
    v_scale_ptr,
    stride_sb,
    stride_ss,
    stride_sh,
    qk_scale,
    window,
    cache_block_size,
    head_dim,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SLIDING: tl.constexpr,
    PRECISION: tl.constexpr,
    QUANT: tl.constexpr,
):
    """Online softmax of the rows ``q`` [ROWS, D] over KV positions ``kv_lo .. kv_hi-1`` (log2 domain)."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    for start in range(kv_lo, kv_hi, BLOCK_N):
        k_pos = start + offs_n
        n_mask = k_pos < kv_hi
        block = tl.load(block_table_ptr + k_pos // cache_block_size, mask=n_mask, other=0).to(
            tl.int64
        )
        offset = k_pos % cache_block_size
        k_ptrs = (
            k_cache_ptr
            + block[None, :] * stride_kb
            + offset[None, :] * stride_ks
            + kv_head * stride_kh
            + offs_d[:, None] * stride_kd
        )
        k = tl.load(k_ptrs, mask=n_mask[None, :] & d_mask[:, None], other=0.0)  # [D, N]
        scores = tl.dot(q, k.to(q.dtype), input_precision=PRECISION) * qk_scale  # [ROWS, N]
        if QUANT:  # (q . k_n) * s_n == q . (s_n * k_n)
            k_scale = tl.load(
                k_scale_ptr + block * stride_sb + offset * stride_ss + kv_head * stride_sh,
                mask=n_mask,
                other=0.0,
            )
            scores = scores * k_scale[None, :]
        visible = n_mask[None, :] & (k_pos[None, :] <= q_pos[:, None])
        if SLIDING:
            visible = visible & (k_pos[None, :] > q_pos[:, None] - window)
        scores = tl.where(visible, scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        m_safe = tl.where(
            m_new == float("-inf"), 0.0, m_new
        )  # a row that saw nothing yet stays at 0
        rescale = tl.exp2(m_i - m_safe)
        p = tl.exp2(scores - m_safe[:, None])
        l_i = l_i * rescale + tl.sum(p, 1)
        if QUANT:  # sum_n p_n * (s_n * v_n) == sum_n (p_n * s_n) * v_n
            v_scale = tl.load(
                v_scale_ptr + block * stride_sb + offset * stride_ss + kv_head * stride_sh,
                mask=n_mask,
                other=0.0,
            )
            p = p * v_scale[None, :]
        v_ptrs = (
            v_cache_ptr
            + block[:, None] * stride_vb
            + offset[:, None] * stride_vs
            + kv_head * stride_vh
            + offs_d[None, :] * stride_vd
        )
        v = tl.load(v_ptrs, mask=n_mask[:, None] & d_mask[None, :], other=0.0)  # [N, D]
        acc = acc * rescale[:, None] + tl.dot(
            p.to(q.dtype), v.to(q.dtype), input_precision=PRECISION
        )
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _initial_state(
    sinks_ptr, heads, row_valid, first_split, ROWS: tl.constexpr, HAS_SINKS: tl.constexpr
):
    """Softmax state before any key: empty, or the sink logit (denominator 1, no value)."""
    if HAS_SINKS:
        sink = (
            tl.load(sinks_ptr + heads, mask=row_valid, other=0.0).to(tl.float32)
            * 1.4426950408889634
        )
        m_i = tl.where(first_split, sink, float("-inf"))
        l_i = tl.where(first_split, 1.0, 0.0) + tl.zeros([ROWS], dtype=tl.float32)
    else:
        m_i = tl.full([ROWS], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([ROWS], dtype=tl.float32)
    return m_i, l_i


@triton.jit
def _decode_kernel(
    out_ptr,
    part_acc_ptr,
    part_m_ptr,
    part_l_ptr,
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    query_start_loc_ptr,
    seq_lens_ptr,
    sinks_ptr,
    k_scale_ptr,
    v_scale_ptr,
    stride_qt,
    stride_qh,
    stride_qd,
    stride_ot,
    stride_oh,
    stride_od,
    stride_bt,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vs,
    stride_vh,
    stride_vd,
    stride_sb,
    stride_ss,
    stride_sh,
    qk_scale,
    window,
    cache_block_size,
    head_dim,
    group,
    num_heads,
    G_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    SLIDING: tl.constexpr,
    HAS_SINKS: tl.constexpr,
    PRECISION: tl.constexpr,
    QUANT: tl.constexpr,
):
    """One (sequence, KV head, split): its new tokens one after another (one, for a decode)."""
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    seq_len = tl.load(seq_lens_ptr + seq)
    g = tl.arange(0, G_PAD)
    heads = kv_head * group + g
    row_valid = g < group
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    for q_idx in range(0, q_len):
        token = (q_start + q_idx).to(tl.int64)
        q = tl.load(
            q_ptr + token * stride_qt + heads[:, None] * stride_qh + offs_d[None, :] * stride_qd,
            mask=row_valid[:, None] & d_mask[None, :],
            other=0.0,
        )
        pos = seq_len - q_len + q_idx
        q_pos = tl.zeros([G_PAD], dtype=tl.int32) + pos
        kv_lo = 0
        if SLIDING:
            kv_lo = tl.maximum(pos - window + 1, 0)
        kv_hi = pos + 1
        tiles_per_split = tl.cdiv(tl.cdiv(kv_hi - kv_lo, BLOCK_N), NUM_SPLITS)
        lo = kv_lo + split * tiles_per_split * BLOCK_N
        hi = tl.minimum(kv_hi, lo + tiles_per_split * BLOCK_N)
        m_i, l_i = _initial_state(sinks_ptr, heads, row_valid, split == 0, G_PAD, HAS_SINKS)
        acc = tl.zeros([G_PAD, BLOCK_D], dtype=tl.float32)
        acc, m_i, l_i = _attend_range(
            acc,
            m_i,
            l_i,
            q,
            k_cache_ptr,
            v_cache_ptr,
            block_tables_ptr + seq * stride_bt,
            kv_head,
            q_pos,
            lo,
            hi,
            stride_kb,
            stride_ks,
            stride_kh,
            stride_kd,
            stride_vb,
            stride_vs,
            stride_vh,
            stride_vd,
            k_scale_ptr,
            v_scale_ptr,
            stride_sb,
            stride_ss,
            stride_sh,
            qk_scale,
            window,
            cache_block_size,
            head_dim,
            BLOCK_N,
            BLOCK_D,
            SLIDING,
            PRECISION,
            QUANT,
        )
        if NUM_SPLITS == 1:
            out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
            tl.store(
                out_ptr
                + token * stride_ot
                + heads[:, None] * stride_oh
                + offs_d[None, :] * stride_od,
                out.to(out_ptr.dtype.element_ty),
                mask=row_valid[:, None] & d_mask[None, :],
            )
        else:
            # partials are [num_tokens, num_heads, NUM_SPLITS(, BLOCK_D)] fp32, contiguous
            part = (token * num_heads + heads) * NUM_SPLITS + split
            tl.store(part_m_ptr + part, m_i, mask=row_valid)
            tl.store(part_l_ptr + part, l_i, mask=row_valid)
            tl.store(
                part_acc_ptr + part[:, None] * BLOCK_D + offs_d[None, :],
                acc,
                mask=row_valid[:, None],
            )


@triton.jit
def _combine_splits_kernel(
    out_ptr,
    part_acc_ptr,
    part_m_ptr,
    part_l_ptr,
    stride_ot,
    stride_oh,
    stride_od,
    head_dim,
    num_heads,
    NUM_SPLITS: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Merge one (token, head)'s split softmax states: rescale each to the common max, sum, divide."""
    token = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    splits = tl.arange(0, NUM_SPLITS)
    offs_d = tl.arange(0, BLOCK_D)
    part = (token * num_heads + head) * NUM_SPLITS + splits
    m = tl.load(part_m_ptr + part)
    denominators = tl.load(part_l_ptr + part)
    acc = tl.load(part_acc_ptr + part[:, None] * BLOCK_D + offs_d[None, :])
    m_max = tl.max(m, 0)
    m_safe = tl.where(m_max == float("-inf"), 0.0, m_max)
    weight = tl.exp2(m - m_safe)
    denom = tl.sum(weight * denominators, 0)
    out = tl.sum(weight[:, None] * acc, 0) / tl.where(denom == 0.0, 1.0, denom)
    tl.store(
        out_ptr + token * stride_ot + head * stride_oh + offs_d * stride_od,
        out.to(out_ptr.dtype.element_ty),
        mask=offs_d < head_dim,
    )


@triton.jit
def _find_sequence(query_start_loc_ptr, num_seqs, tile, BLOCK_Q: tl.constexpr):
    """The sequence owning flat query tile ``tile``: the last s with start(s) <= tile (binary search).

    Sequence s's tiles begin at start(s) = query_start_loc[s] // BLOCK_Q + s, which leaves
    every sequence room for its cdiv(q_len, BLOCK_Q) tiles, so the grid
    (num_tokens // BLOCK_Q + num_seqs) is known on the host without reading q_lens.
    """
    # the carried bounds start as int32 tensors, so their type is fixed even when the JIT
    # specialises num_seqs == 1 to a constexpr
    lo = tile * 0
    hi = tile * 0 + num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        start = tl.load(query_start_loc_ptr + mid) // BLOCK_Q + mid
        if start <= tile:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@triton.jit
def _prefill_kernel(
    out_ptr,
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    query_start_loc_ptr,
    seq_lens_ptr,
    sinks_ptr,
    k_scale_ptr,
    v_scale_ptr,
    stride_qt,
    stride_qh,
    stride_qd,
    stride_ot,
    stride_oh,
    stride_od,
    stride_bt,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vs,
    stride_vh,
    stride_vd,
    stride_sb,
    stride_ss,
    stride_sh,
    qk_scale,
    window,
    cache_block_size,
    head_dim,
    group,
    num_seqs,
    BLOCK_Q: tl.constexpr,
    G_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SLIDING: tl.constexpr,
    HAS_SINKS: tl.constexpr,
    PRECISION: tl.constexpr,
    QUANT: tl.constexpr,
):
    """One (query tile, KV head): BLOCK_Q new tokens of one sequence x the heads of one group."""
    tile = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = _find_sequence(query_start_loc_ptr, num_seqs, tile, BLOCK_Q)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    q_tile = tile - (q_start // BLOCK_Q + seq)
    if q_tile * BLOCK_Q >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    rows = tl.arange(0, BLOCK_Q * G_PAD)  # row = (query token, head of the group)
    q_idx = q_tile * BLOCK_Q + rows // G_PAD
    g = rows % G_PAD
    heads = kv_head * group + g
    row_valid = (q_idx < q_len) & (g < group)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    tokens = (q_start + q_idx).to(tl.int64)
    q = tl.load(
        q_ptr
        + tokens[:, None] * stride_qt
        + heads[:, None] * stride_qh
        + offs_d[None, :] * stride_qd,
        mask=row_valid[:, None] & d_mask[None, :],
        other=0.0,
    )
    first_pos = seq_len - q_len + q_tile * BLOCK_Q
    q_pos = seq_len - q_len + q_idx
    kv_hi = tl.minimum(seq_len, first_pos + BLOCK_Q)
    kv_lo = 0
    if SLIDING:
        kv_lo = tl.maximum(first_pos - window + 1, 0)
    m_i, l_i = _initial_state(sinks_ptr, heads, row_valid, q_tile >= 0, BLOCK_Q * G_PAD, HAS_SINKS)
    acc = tl.zeros([BLOCK_Q * G_PAD, BLOCK_D], dtype=tl.float32)
    acc, m_i, l_i = _attend_range(
        acc,
        m_i,
        l_i,
        q,
        k_cache_ptr,
        v_cache_ptr,
        block_tables_ptr + seq * stride_bt,
        kv_head,
        q_pos,
        kv_lo,
        kv_hi,
        stride_kb,
        stride_ks,
        stride_kh,
        stride_kd,
        stride_vb,
        stride_vs,
        stride_vh,
        stride_vd,
        k_scale_ptr,
        v_scale_ptr,
        stride_sb,
        stride_ss,
        stride_sh,
        qk_scale,
        window,
        cache_block_size,
        head_dim,
        BLOCK_N,
        BLOCK_D,
        SLIDING,
        PRECISION,
        QUANT,
    )
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(
        out_ptr
        + tokens[:, None] * stride_ot
        + heads[:, None] * stride_oh
        + offs_d[None, :] * stride_od,
        out.to(out_ptr.dtype.element_ty),
        mask=row_valid[:, None] & d_mask[None, :],
    )


# ---------------------------------------------------------------------------- host side

_INTERPRETER_SMS = 2  # the Triton interpreter on CPU: few splits keep it quick


def _check_attention_args(
    query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, sliding_window, sinks
):
    if query.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"expected query [tokens, heads, dim] and caches [blocks, block_size, kv_heads, dim], "
            f"got {tuple(query.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}"
        )
    num_heads, head_dim = query.shape[1], query.shape[2]
    num_kv_heads = k_cache.shape[2]
    if k_cache.shape[3] != head_dim:
        raise ValueError(f"query head_dim {head_dim} differs from the cache's {k_cache.shape[3]}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
    num_seqs = seq_lens.shape[0]
    if (
        query_start_loc.shape != (num_seqs + 1,)
        or block_tables.dim() != 2
        or block_tables.shape[0] != num_seqs
    ):
        raise ValueError(
            f"batch layout disagrees: seq_lens {tuple(seq_lens.shape)}, query_start_loc "
            f"{tuple(query_start_loc.shape)}, block_tables {tuple(block_tables.shape)}"
        )
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"sliding_window must be >= 1 or None, got {sliding_window}")
    if sinks is not None and sinks.shape != (num_heads,):
        raise ValueError(f"sinks must be [{num_heads}], got {tuple(sinks.shape)}")


def _num_splits(programs: int, max_keys: int, block_n: int, device: torch.device) -> int:
    """Flash-decoding split count: enough programs for two waves over the SMs, each split >= 4 KV tiles."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
    else:
        sms = _INTERPRETER_SMS
    by_occupancy = triton.cdiv(2 * sms, max(programs, 1))
    by_length = triton.cdiv(max_keys, 4 * block_n)
    return min(16, triton.next_power_of_2(max(1, min(by_occupancy, by_length))))


def paged_attention_triton(
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
    *,
    num_splits: int | None = None,
    block_n: int | None = None,
    block_q_rows: int | None = None,
) -> torch.Tensor:
    """Triton version of :func:`llm.kernels.attention.paged_attention` (same arguments and result).

    Never waits on the device (so a step can be captured in a CUDA graph): the choice and
    the grids come from shapes alone. A batch with as many tokens as sequences is a decode
    batch and runs the decode kernel, flash-decoding over ``num_splits`` KV splits (chosen
    from the SM count and the block-table width when None); that kernel loops over a
    sequence's tokens, so it stays correct in the odd case of such a batch holding an
    empty query beside a longer one. Any other batch runs the prefill kernel. ``block_n``
    (KV positions per tile) and ``block_q_rows`` (query rows per prefill tile: tokens x
    group heads) are tuning knobs that tests use to force tile boundaries.
    """
    _check_attention_args(
        query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, sliding_window, sinks
    )
    num_tokens, num_heads, head_dim = query.shape
    cache_block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    num_seqs = seq_lens.shape[0]
    quant = _quant_flags(k_cache, k_scale, v_scale)
    out = torch.empty_like(query)
    if num_seqs == 0 or num_tokens == 0:
        return out
    query_start_loc = query_start_loc.to(torch.int32)
    seq_lens = seq_lens.to(torch.int32)
    block_d = max(16, triton.next_power_of_2(head_dim))
    precision = "ieee" if query.dtype == torch.float32 else "tf32"
    window = sliding_window if sliding_window is not None else 0
    sinks_arg = sinks if sinks is not None else query  # never read when HAS_SINKS is off
    scales = (
        k_scale if k_scale is not None else query,  # never read when QUANT is off
        v_scale if v_scale is not None else query,
    )
    common = (
        *query.stride(),
        *out.stride(),
        block_tables.stride(0),
        *k_cache.stride(),
        *v_cache.stride(),
        *_scale_strides(k_scale),  # V's scales share K's layout (_quant_flags checks)
        scale * LOG2E,
        window,
        cache_block_size,
        head_dim,
        group,
    )
    flags = dict(
        SLIDING=sliding_window is not None,
        HAS_SINKS=sinks is not None,
        PRECISION=precision,
        QUANT=quant["QUANT"],
    )
    block_n = block_n or 64
    if num_tokens == num_seqs:
        g_pad = max(16, triton.next_power_of_2(group))
        max_keys = block_tables.shape[1] * cache_block_size
        if sliding_window is not None:
            max_keys = min(max_keys, sliding_window)
        splits = triton.next_power_of_2(
            num_splits or _num_splits(num_seqs * num_kv_heads, max_keys, block_n, query.device)
        )
        if splits > 1:
            part_m = torch.empty(
                (num_tokens, num_heads, splits), dtype=torch.float32, device=query.device
            )
            part_l = torch.empty_like(part_m)
            part_acc = torch.empty(
                (num_tokens, num_heads, splits, block_d), dtype=torch.float32, device=query.device
            )
        else:
            part_m = part_l = part_acc = out
        _decode_kernel[(num_seqs, num_kv_heads, splits)](
            out,
            part_acc,
            part_m,
            part_l,
            query,
            k_cache,
            v_cache,
            block_tables,
            query_start_loc,
            seq_lens,
            sinks_arg,
            *scales,
            *common,
            num_heads,
            G_PAD=g_pad,
            BLOCK_N=block_n,
            BLOCK_D=block_d,
            NUM_SPLITS=splits,
            **flags,
        )
        if splits > 1:
            _combine_splits_kernel[(num_tokens, num_heads)](
                out,
                part_acc,
                part_m,
                part_l,
                *out.stride(),
                head_dim,
                num_heads,
                NUM_SPLITS=splits,
                BLOCK_D=block_d,
            )
        return out
    g_pad = triton.next_power_of_2(group)
    rows = triton.next_power_of_2(max(16, block_q_rows or 64, g_pad))
    block_q = rows // g_pad
    _prefill_kernel[(num_tokens // block_q + num_seqs, num_kv_heads)](
        out,
        query,
        k_cache,
        v_cache,
        block_tables,
        query_start_loc,
        seq_lens,
        sinks_arg,
        *scales,
        *common,
        num_seqs,
        BLOCK_Q=block_q,
        G_PAD=g_pad,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        **flags,
    )
    return out
