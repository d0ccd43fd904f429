"""MXFP4 (OCP microscaling FP4) weights: 4-bit e2m1 values in blocks of 32 sharing an e8m0 scale.

gpt-oss checkpoints store each expert matrix W[out, in] as
``blocks``: uint8 [..., out, in // 32, 16] (two e2m1 codes per byte, low nibble first) and
``scales``: uint8 [..., out, in // 32] (e8m0: the value 2 ** (scale - 127)).
"""

from __future__ import annotations

import torch

MXFP4_BLOCK = 32
# e2m1 code -> value; bit 3 is the sign.
FP4_VALUES = (
    0.0,
    0.5,
    1.0,
    1.5,
    2.0,
    3.0,
    4.0,
    6.0,
    -0.0,
    -0.5,
    -1.0,
    -1.5,
    -2.0,
    -3.0,
    -4.0,
    -6.0,
)


def dequantize_mxfp4(
    blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    """Expand MXFP4 ``blocks``/``scales`` to a dense tensor [..., out, in] of ``dtype``.

    The reference path calls this on one expert at a time, so a full dense copy of all
    experts never exists in memory.
    """
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise TypeError("MXFP4 blocks and scales must be uint8")
    if blocks.shape[:-1] != scales.shape or blocks.shape[-1] != MXFP4_BLOCK // 2:
        raise ValueError(
            f"MXFP4 shapes disagree: blocks {tuple(blocks.shape)}, scales {tuple(scales.shape)}"
        )
    lut = torch.tensor(FP4_VALUES, dtype=torch.float32, device=blocks.device)
    low = lut[(blocks & 0x0F).long()]
    high = lut[(blocks >> 4).long()]
    values = torch.stack((low, high), dim=-1).flatten(-2)  # [..., out, groups, 32]
    exponents = scales.to(torch.int32) - 127
    values = torch.ldexp(values, exponents.unsqueeze(-1).to(torch.float32))
    return values.flatten(-2).to(dtype)


def quantize_mxfp4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Round a dense [..., out, in] tensor to MXFP4 (blocks, scales); for tests and random models.

    The shared exponent of each block of 32 is chosen so its largest magnitude fits
    e2m1's range (max 6.0); values are rounded to the nearest representable code.
    """
    if weight.shape[-1] % MXFP4_BLOCK:
        raise ValueError(f"in-features {weight.shape[-1]} is not a multiple of {MXFP4_BLOCK}")
    w = weight.float().reshape(*weight.shape[:-1], weight.shape[-1] // MXFP4_BLOCK, MXFP4_BLOCK)
    amax = w.abs().amax(dim=-1).clamp(min=2.0**-126)
    exponent = torch.ceil(torch.log2(amax / 6.0)).clamp(-127, 127)
    scaled = w / torch.ldexp(torch.ones_like(exponent), exponent.to(torch.int32)).unsqueeze(-1)
    lut = torch.tensor(FP4_VALUES[:8], dtype=torch.float32, device=weight.device)
    codes = (scaled.abs().unsqueeze(-1) - lut).abs().argmin(dim=-1).to(torch.uint8)
    codes = codes | ((scaled < 0).to(torch.uint8) << 3)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    scales = (exponent + 127).to(torch.uint8)
    return blocks.contiguous(), scales.contiguous()
