"""The activation rounding of the CPU kernels' block dot products, in torch (for tests).

``cpu_kernels.cpp``'s 4-bit and 8-bit matmuls (``q4_linear``, and ``q8_linear`` outside
AVX-512 builds) round each row of x to 16-bit integers per block of 32 columns:
``q = round(x * 32767 / max|x|)``, ``x ~ q * max|x| / 32767``, so that a block's dot
product with the weight codes is integer multiply-adds. ``x @ W.T`` of what this returns
is what those kernels compute, up to fp32 rounding.
"""

from __future__ import annotations

import torch

BLOCK = 32


def round_rows_to_int16(x: torch.Tensor) -> torch.Tensor:
    """fp32 ``x`` [rows, cols] as the kernels see it: rounded per 32-column block."""
    rows, cols = x.shape
    blocks = x.float().reshape(rows, cols // BLOCK, BLOCK)
    top = blocks.abs().amax(-1, keepdim=True)
    # a tensor divided by a tensor: one IEEE fp32 division, as the kernel's 32767.f / top
    # (a Python number over a tensor may take another route and differ in the last bit)
    inv = torch.where(top > 0, torch.full_like(top, 32767.0) / top, torch.zeros_like(top))
    q = (blocks * inv).clamp(-32767, 32767).round()
    return (q * (top / 32767.0)).reshape(rows, cols)
