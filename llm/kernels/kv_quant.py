"""Quantised KV cache: int8 or fp8 (e4m3) values with one fp32 scale per (slot, KV head).

Granularity, chosen deliberately: a decode writes a block one token at a time, so a scale
per (block, head) would be fixed by the block's first token and need a rescale (a read,
requantise and write of the whole block, racing with other writers in the same kernel)
whenever a later token exceeds it. A scale per (slot, head) is exact at write time: each
token's row of ``head_dim`` values is quantised against its own absolute maximum, written
once and never touched again, and copy-on-write copies scales with their block. The price
is 4 bytes per (slot, head) beside ``head_dim`` value bytes (6 % at head_dim 64).

Symmetric quantisation, the definition every backend follows (``quantize_rows``):
``scale = max(|x|) / QMAX`` (QMAX 127 for int8, 448 for e4m3), ``q = x / scale`` rounded
(int8: half away from zero; fp8: the cast's round-to-nearest-even) and clamped to
``±QMAX``. A row of zeros gets a tiny scale so that no division by zero happens.
Attention reads ``q * scale``: the kernels fold the K scale into the scores and the V
scale into the probabilities, so no dequantised copy of the cache is made on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KV_DTYPES = ("auto", "bf16", "fp8", "int8")
QUANTISED_KV_DTYPES = {"int8": torch.int8, "fp8": getattr(torch, "float8_e4m3fn", None)}
QMAX = {torch.int8: 127.0}
if QUANTISED_KV_DTYPES["fp8"] is not None:
    QMAX[QUANTISED_KV_DTYPES["fp8"]] = 448.0
MIN_ABSMAX = 1e-8  # a zero row's scale: its values quantise to 0 and read back as 0
SCALE_DTYPE = torch.float32


@dataclass(frozen=True)
class QuantizedKVCache:
    """One layer's K (or V) cache held quantised, passed where a cache tensor goes.

    ``data`` [num_blocks, block_size, num_kv_heads, head_dim] int8 or float8_e4m3fn;
    ``scale`` [num_blocks, block_size, num_kv_heads] float32. The models pass it through
    untouched; the dispatch in ``llm.kernels.attention`` hands both tensors to the kernels.
    """

    data: torch.Tensor
    scale: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def device(self) -> torch.device:
        return self.data.device


KVCacheTensor = torch.Tensor | QuantizedKVCache


def split_cache(cache: KVCacheTensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(values, scales or None) of a plain or quantised cache."""
    if isinstance(cache, QuantizedKVCache):
        return cache.data, cache.scale
    return cache, None


def cache_tensors(cache: KVCacheTensor) -> tuple[torch.Tensor, ...]:
    """Every tensor a cache holds, each indexed by block first (block copies, byte counts)."""
    data, scale = split_cache(cache)
    return (data,) if scale is None else (data, scale)


def kv_storage_dtype(kv_dtype: str, model_dtype: torch.dtype) -> torch.dtype:
    """The element type of the cache values for an ``ENCLAVE_LLM_KV_DTYPE`` setting."""
    if kv_dtype == "auto":
        return model_dtype
    if kv_dtype == "bf16":
        return torch.bfloat16
    dtype = QUANTISED_KV_DTYPES.get(kv_dtype)
    if dtype is None:
        raise ValueError(
            f"kv_dtype {kv_dtype!r}: this torch build has no float8_e4m3fn"
            if kv_dtype == "fp8"
            else f"kv_dtype must be one of {KV_DTYPES}, got {kv_dtype!r}"
        )
    return dtype


def is_quantised(dtype: torch.dtype) -> bool:
    return dtype in QMAX


def slot_bytes_per_head(kv_dtype: str, model_dtype: torch.dtype, head_dim: int) -> int:
    """Bytes one token's K (or V) row of one KV head takes, its scale included."""
    dtype = kv_storage_dtype(kv_dtype, model_dtype)
    values = head_dim * torch.empty((), dtype=dtype).element_size()
    scale = torch.empty((), dtype=SCALE_DTYPE).element_size() if is_quantised(dtype) else 0
    return values + scale


def quantize_rows(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(values in ``dtype``, fp32 scales) of ``x`` [..., head_dim], one scale per row."""
    qmax = QMAX[dtype]
    x = x.float()
    scale = x.abs().amax(-1).clamp_min(MIN_ABSMAX) / qmax
    y = (x / scale[..., None]).clamp(-qmax, qmax)
    if dtype == torch.int8:
        y = (y + torch.where(y >= 0, 0.5, -0.5)).trunc()  # half away from zero, as the Triton cast
    return y.to(dtype), scale


def dequantize(data: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """fp32 values of cache rows ``data`` [..., head_dim] with their ``scale`` [...] (None: plain)."""
    if scale is None:
        return data.float()
    return data.float() * scale[..., None]
