"""Our bf16 GEMM for CPUs with AVX-512 BF16 but no AMX (``bf16_linear`` in cpu_kernels.cpp).

There (a Zen 4, say) a 400-token prefill is ~80% bf16 GEMMs, which oneDNN ran at 89-95%
of the cores' ``vdpbf16ps`` peak; ours runs at 95-96% on one thread on SmolLM2's shapes
and splits the work into equal halves between threads, so those GEMMs are 1.04-1.10x
faster at 405 rows and 1.14-1.47x at 16-64 rows (``docs/llm_engine_cpu.md``,
``bench/cpu_kernels.py``). With AMX, oneDNN multiplies in
tiles and stays the faster one: the kernel is then not offered (``fast_kernels``).

The weight is packed once, like oneDNN's copy (the same bytes): per 64-column panel and
pair of input dimensions, the 64 columns' pairs. Shapes whose output count is not a
multiple of 64 or whose input count is odd are left to oneDNN.
"""

from __future__ import annotations

import torch

from llm.kernels import cpu_ext

PANEL_COLUMNS = 64  # output columns per packed panel (kGemmColumns)


def pack_bf16(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` [N, K] packed for ``bf16_linear``, or None where our kernel does not take
    it (no AVX-512 BF16, AMX present, not bf16 on the CPU, or a shape it does not tile)."""
    out_features, in_features = weight.shape
    if out_features % PANEL_COLUMNS or in_features % 2:
        return None
    with torch.no_grad():
        kernels = cpu_ext.for_tensor(weight, "bf16_linear")
        if kernels is None or weight.dtype != torch.bfloat16:
            return None
        return kernels.pack_bf16_weight(weight.detach().contiguous())


def bf16_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ W.T (+ bias)`` for bf16 ``x`` [..., K] and ``W`` packed by ``pack_bf16``."""
    kernels = cpu_ext.kernels()
    if kernels is None:  # packed for our kernel, which has since failed to load
        raise RuntimeError("this weight is packed for the fused CPU kernels, not loaded now")
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = kernels.bf16_linear(rows, packed).view(*x.shape[:-1], -1)
    return out if bias is None else out + bias
