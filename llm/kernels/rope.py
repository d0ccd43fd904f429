"""Rotate-half RoPE, and its fusion with the write of K/V into the paged cache.

``apply_rotary`` is the torch form every model shares. ``rotate_and_cache`` is what a
llama-family attention layer does with its fused q|k|v projection each step: rotate q and
k, store k and v in the cache, return q. On the CPU it is one C++ call
(``llm.kernels.cpu_ext``: no temporaries, identical results); elsewhere, with a
quantised cache, or without the extension, it is ``apply_rotary`` plus ``write_kv_cache``.
"""

from __future__ import annotations

import torch

from llm.kernels import cpu_ext
from llm.kernels.attention import write_kv_cache
from llm.kernels.backend import choose_backend
from llm.kernels.kv_quant import KVCacheTensor


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on [num_tokens, heads, head_dim].

    ``sin_signed`` is the sin table with its first half negated (``RotaryEmbedding``), so
    HF's ``x * cos + cat(-x2, x1) * sin`` is ``x * cos + roll(x, half) * sin_signed``: the
    same products (negation is exact), in three ops instead of six.
    """
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin_signed


def rotate_and_cache(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin_signed: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    k_cache: KVCacheTensor,
    v_cache: KVCacheTensor,
    slot_mapping: torch.Tensor,
) -> torch.Tensor:
    """q [num_tokens, num_heads, head_dim] rotated; k rotated and v written to the cache.

    ``qkv`` [num_tokens, (num_heads + 2 num_kv_heads) * head_dim] is the fused projection's
    output; ``cos``/``sin_signed`` [num_tokens, 1, head_dim] in its dtype.
    """
    num_tokens = qkv.shape[0]
    head_dim = cos.shape[-1]
    fused = cpu_ext.for_tensor(qkv, "rope_write_kv")
    if (
        fused is not None
        and isinstance(k_cache, torch.Tensor)
        and k_cache.dtype == qkv.dtype
        and qkv.is_contiguous()
        and choose_backend("write_kv_cache", qkv, k_cache, slot_mapping) == "cpu"
    ):
        return fused.rope_write_kv(
            qkv, cos, sin_signed, num_heads, num_kv_heads, k_cache, v_cache, slot_mapping
        )
    q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim
    # rotate q and k heads together in one pass (elementwise, same numerics as separately)
    qk = qkv[:, : q_size + kv_size].view(num_tokens, num_heads + num_kv_heads, head_dim)
    q, k = apply_rotary(qk, cos, sin_signed).split([num_heads, num_kv_heads], dim=1)
    v = qkv[:, q_size + kv_size :].view(num_tokens, num_kv_heads, head_dim)
    write_kv_cache(k, v, k_cache, v_cache, slot_mapping)
    return q
