"""Paged attention over a block-table KV cache, and the write of new K/V into that cache.

Cache layout (one pair per layer): ``k_cache``/``v_cache`` [num_blocks, block_size,
num_kv_heads, head_dim]. A sequence's tokens live in the blocks its block table lists,
in order; token t of a sequence is at (block_table[t // block_size], t % block_size).

One call covers a whole mixed batch: prefill chunks and single-token decodes are
concatenated along the token axis (varlen). The model writes the step's K/V into the
cache first, then attends, so every query reads all of its keys from the cache.

A cache may be quantised (``ENCLAVE_LLM_KV_DTYPE`` int8/fp8): then each of K and V is a
``QuantizedKVCache`` (values + one scale per slot and KV head, ``llm.kernels.kv_quant``)
instead of a tensor. The models pass it through; this module hands the kernels the
values and the scales as separate tensors.

This module only dispatches (``llm.kernels.backend``): the torch references are in
``attention_ref``, the CPU decode path in ``cpu_attention``, the Triton kernels in
``triton_attention``. Kernel modules are referenced as modules so a test that switches
on the Triton interpreter and reloads them is seen here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from llm.kernels import attention_ref, cpu_attention, triton_attention
from llm.kernels.backend import choose_backend
from llm.kernels.kv_quant import KVCacheTensor, split_cache


def write_kv_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: KVCacheTensor,
    v_cache: KVCacheTensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Scatter this step's ``key``/``value`` [num_tokens, num_kv_heads, head_dim] into the cache.

    ``slot_mapping`` [num_tokens] (int64) holds block_id * block_size + offset for each
    token; a negative slot means "do not store" (padding).
    """
    (k_data, k_scale), (v_data, v_scale) = split_cache(k_cache), split_cache(v_cache)
    backend = choose_backend(
        "write_kv_cache", key, value, k_data, v_data, slot_mapping, k_scale, v_scale
    )
    write = (
        triton_attention.write_kv_cache_triton
        if backend == "triton"
        else attention_ref.write_kv_cache_ref
    )
    return write(key, value, k_data, v_data, slot_mapping, k_scale, v_scale)


def paged_attention(
    query: torch.Tensor,
    k_cache: KVCacheTensor,
    v_cache: KVCacheTensor,
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
    (k_data, k_scale), (v_data, v_scale) = split_cache(k_cache), split_cache(v_cache)
    backend = choose_backend(
        "paged_attention",
        query,
        k_data,
        v_data,
        block_tables,
        query_start_loc,
        seq_lens,
        sinks,
        k_scale,
        v_scale,
    )
    attend: Callable[..., torch.Tensor]
    if backend == "triton":
        attend = triton_attention.paged_attention_triton
    elif backend == "cpu":  # decodes batched in one pass (the reference loops per sequence)
        attend = cpu_attention.paged_attention_cpu
    else:
        attend = attention_ref.paged_attention_ref
    return attend(
        query,
        k_data,
        v_data,
        block_tables,
        query_start_loc,
        seq_lens,
        scale,
        sliding_window,
        sinks,
        k_scale,
        v_scale,
    )
