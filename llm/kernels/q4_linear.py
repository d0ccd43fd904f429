"""4-bit weights kept as the GGUF file stores them, multiplied with torch's int4 CPU kernel
or, for fp32 activations, with our own (``llm.kernels.cpu_ext``'s ``q4_linear``).

GGUF's Q4_0 and Q4_1 store each row in blocks of 32 four-bit codes with an fp16 scale
``d`` (and, for Q4_1, an fp16 minimum ``m``): ``w = d * (q - 8)`` or ``w = d * q + m``.
Both are exactly torch's int4 group format, ``w = scale * (q - 8) + zero`` with group size
32 (Q4_0: ``zero = 0``; Q4_1: ``zero = m + 8 d``), so the weights need not be dequantised:
``aten._weight_int4pack_mm_for_cpu`` reads a quarter of the bytes of bf16 per decode step.

Why it matters: decoding one sequence is memory-bound (every weight is read once per
token), so 4-bit weights make a single request's decode much faster. For many rows at
once (prefill, big decode batches) the dequantising kernel loses to oneDNN's bf16 GEMM,
so ``Linear`` in the models uses this path only up to ``INT4_MAX_ROWS`` rows.

With fp32 activations (CPUs without native bf16) torch's kernel loses to the dense fp32
matmul even at one row (3.4-5.6x slower on an AVX2 Zen 3), so there the weight is packed
for our kernel instead, which rounds the rows to 16 bits per block and multiplies them by
the codes widened to 16 bits (integer multiply-adds; ``block_dots_ref``): a decode batch
six rows per pass, a prompt in panels whose codes are widened once per call, so where
the load-time check finds it faster than the dense fp32 GEMM at a prompt's size too
(``cpu_paths``), it serves every row count.

On a CPU with AMX, bf16 activations go through our AMX kernel (``q4_linear_amx``): each
block's codes become a bf16 tile that AMX multiplies with up to 16 rows, so the 4-bit
weight keeps paying at decode batches where aten's kernel loses to the bf16 GEMM. On a
CPU with AVX-512 BF16 but no AMX (Zen 4) the same layout goes through ``q4_linear_dpbf16``,
which multiplies the unpacked codes with ``vdpbf16ps`` instead of tiles.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch

from llm.kernels import cpu_ext

GROUP = 32  # elements per GGUF block, and the int4 kernel's group size

# Rows (tokens) up to which the int4 kernel beats the prepacked bf16 GEMM. Measured as the
# engine's whole decode step on SmolLM2-135M, 1 thread, AVX512-BF16 CPU (int4 vs bf16):
# 2 sequences 13.4 vs 17.6 ms, 4: 17.7 vs 20.2 ms, 8: 27.3 vs 26.3 ms.
INT4_MAX_ROWS = 4


@dataclass
class Q4Blocks:
    """A 4-bit weight [rows, cols]: codes 0..15 and per-32-column fp32 scale and zero."""

    codes: torch.Tensor  # uint8 [rows, cols]
    scale: torch.Tensor  # float32 [rows, cols // 32]
    zero: torch.Tensor  # float32 [rows, cols // 32]

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape

    def dequantize(self) -> torch.Tensor:
        """The fp32 weight these blocks encode (the reference for the int4 kernel)."""
        rows, cols = self.codes.shape
        grouped = (self.codes.float() - 8.0).view(rows, cols // GROUP, GROUP)
        return (grouped * self.scale[..., None] + self.zero[..., None]).view(rows, cols)

    def permute_rows(self, index: torch.Tensor) -> Q4Blocks:
        """The same weight with its rows reordered (blocks run along columns, so rows move whole)."""
        return Q4Blocks(self.codes[index], self.scale[index], self.zero[index])

    @staticmethod
    def cat(parts: list[Q4Blocks]) -> Q4Blocks:
        """Stack weights along rows, as fused projections (q|k|v, gate|up) do."""
        return Q4Blocks(
            torch.cat([p.codes for p in parts]),
            torch.cat([p.scale for p in parts]),
            torch.cat([p.zero for p in parts]),
        )


def q4_from_gguf(raw: torch.Tensor, type_name: str, shape: tuple[int, int]) -> Q4Blocks:
    """Split GGUF Q4_0/Q4_1 bytes of a [rows, cols] tensor into codes, scales and zeros."""
    rows, cols = shape
    if cols % GROUP:
        raise ValueError(
            f"a 4-bit GGUF row must hold whole {GROUP}-element blocks, got {cols} columns"
        )
    header = {"Q4_0": 2, "Q4_1": 4}.get(type_name)
    if header is None:
        raise ValueError(f"{type_name} is not a 4-bit GGUF block type (Q4_0 or Q4_1)")
    blocks = raw.view(torch.uint8).reshape(rows * cols // GROUP, header + GROUP // 2)
    d = blocks[:, 0:2].contiguous().view(torch.float16).float()
    qs = blocks[:, header:]
    codes = torch.cat(
        [qs & 0x0F, qs >> 4], dim=1
    )  # low nibbles are elements 0..15, high ones 16..31
    zero = (
        blocks[:, 2:4].contiguous().view(torch.float16).float() + 8.0 * d
        if type_name == "Q4_1"
        else torch.zeros_like(d)
    )
    return Q4Blocks(
        codes.reshape(rows, cols), d.reshape(rows, cols // GROUP), zero.reshape(rows, cols // GROUP)
    )


def int4_available() -> bool:
    """Whether this torch build has the int4 CPU kernels."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
        torch.ops.aten, "_convert_weight_to_int4pack_for_cpu"
    )


@dataclass
class PackedInt4:
    """A ``Q4Blocks`` weight in an int4 kernel's layout, for activations of one dtype.

    ``kernel`` "aten": ``_weight_int4pack_mm_for_cpu``'s packed codes, and scales and zeros
    [cols // 32, rows, 2] in the activation dtype. "enclave" (fp32 only): codes [rows // 8,
    cols // 32, 128] and [rows // 8, cols // 32, 2, 8] fp32 holding d and m per column
    (w = d q + m; ``_pack_own``).
    "amx" (bf16 only): weight tiles [rows // 16, cols // 32, 256] and [rows // 16,
    cols // 32, 2, 16] fp32 holding d and m - 128 d per column (``_pack_amx``), multiplied
    by ``q4_linear_amx`` where AMX is granted, else by ``q4_linear_dpbf16``.
    """

    weight: torch.Tensor  # uint8, the kernel's packed layout
    scales_and_zeros: torch.Tensor
    out_features: int
    kernel: str = "aten"

    @property
    def activation_dtype(self) -> torch.dtype:
        """The dtype of the rows this packing multiplies."""
        own = {"enclave": torch.float32, "amx": torch.bfloat16}
        return own.get(self.kernel, self.scales_and_zeros.dtype)


def _offered(kernel: str) -> bool:
    """Whether our CPU kernels offer ``kernel`` here: "q4_linear" (fp32 rows; AVX2 and
    AVX-512 builds), "q4_linear_dpbf16" (bf16 rows; AVX-512 BF16 builds) or
    "q4_linear_amx" (bf16 rows; builds for a CPU with AMX-BF16)."""
    with torch.no_grad():
        return cpu_ext.for_tensor(torch.empty(0), kernel) is not None


OWN_COLUMNS = 8  # output columns per group of our fp32 kernel (a ymm of fp32 lanes)


def _pack_own(blocks: Q4Blocks) -> PackedInt4:
    """Codes per 8 output columns and 32-column block as ``q4_linear`` widens them: 128
    bytes, chunk c (16 bytes) holding k pair c in its low nibbles and k pair c + 8 in its
    high ones, byte i = column i // 2 at k parity i % 2 (lanes = columns, so vpmaddwd
    leaves each column's products in its own lane); scales [groups, blocks, 2, 8] fp32
    holding d and m per column (w = d q + m)."""
    rows, cols = blocks.shape
    groups, per_row = rows // OWN_COLUMNS, cols // GROUP
    # [group, column, block, k pair, parity] -> [group, block, k pair, column, parity]
    lanes = blocks.codes.view(groups, OWN_COLUMNS, per_row, GROUP // 2, 2).permute(0, 2, 3, 1, 4)
    lanes = lanes.reshape(groups, per_row, GROUP // 2, 2 * OWN_COLUMNS)
    codes = lanes[:, :, : GROUP // 4] | (lanes[:, :, GROUP // 4 :] << 4)
    mins = blocks.zero - 8.0 * blocks.scale  # w = d (q - 8) + zero = d q + m
    d, m = (
        v.float().view(groups, OWN_COLUMNS, per_row).transpose(1, 2) for v in (blocks.scale, mins)
    )
    scales = torch.stack([d, m], dim=2).contiguous()
    return PackedInt4(codes.reshape(groups, per_row, 128).contiguous(), scales, rows, "enclave")


AMX_COLUMNS = 16  # output columns per AMX tile


def _pack_amx(blocks: Q4Blocks) -> PackedInt4:
    """Codes as AMX weight tiles, per 16 output columns and 32-column block: tile row p
    holds the 16 columns' codes for k = 2p and 2p + 1, side by side; 32-byte chunk c holds
    row 2c in its low nibbles and row 2c + 1 in its high ones (``codes_to_tile`` in
    cpu_kernels.cpp). The kernel multiplies bf16 128 + q, so e = m - 128 d undoes the 128."""
    rows, cols = blocks.shape
    groups, per_row = rows // AMX_COLUMNS, cols // GROUP
    # [group, column, block, k pair, k parity] -> [group, block, k pair, column, parity]
    lanes = blocks.codes.view(groups, AMX_COLUMNS, per_row, GROUP // 2, 2).permute(0, 2, 3, 1, 4)
    lanes = lanes.reshape(groups, per_row, GROUP // 2, 2 * AMX_COLUMNS)
    weight = (lanes[:, :, 0::2] | (lanes[:, :, 1::2] << 4)).reshape(groups, per_row, 256)
    mins = blocks.zero - 8.0 * blocks.scale  # w = d (q - 8) + zero = d q + m
    d, e = (
        v.float().view(groups, AMX_COLUMNS, per_row).transpose(1, 2)
        for v in (blocks.scale, mins - 128.0 * blocks.scale)
    )
    return PackedInt4(weight.contiguous(), torch.stack([d, e], dim=2).contiguous(), rows, "amx")


# our kernels for bf16 rows on the tile layout, the preferred first
TILE_KERNELS = ("q4_linear_amx", "q4_linear_dpbf16")


def _bf16_tile_kernel() -> str | None:
    """Our kernel for bf16 rows on the tile layout: AMX's where offered, else AVX-512 BF16's."""
    return next((kernel for kernel in TILE_KERNELS if _offered(kernel)), None)


@functools.cache
def _tile_product(kernels: ModuleType) -> Callable | None:
    """The loaded kernels' product for the tile layout, looked up once, not per matmul."""
    offered = kernels.fast_kernels()
    return next((getattr(kernels, k) for k in TILE_KERNELS if k in offered), None)


def pack_int4(blocks: Q4Blocks, dtype: torch.dtype) -> PackedInt4:
    """Lay 4-bit blocks out for the kernel that will multiply them (once, at load): ours
    for fp32 activations where the CPU kernels offer it, ours for bf16 (AMX, or AVX-512
    BF16) where the CPU has it, else ``_weight_int4pack_mm_for_cpu``."""
    rows, cols = blocks.shape
    if dtype == torch.float32 and rows % OWN_COLUMNS == 0 and _offered("q4_linear"):
        return _pack_own(blocks)
    if dtype == torch.bfloat16 and rows % AMX_COLUMNS == 0 and _bf16_tile_kernel():
        return _pack_amx(blocks)
    if rows % 8 or cols % (2 * GROUP):
        raise ValueError(
            f"int4 packing needs rows % 8 == 0 and cols % {2 * GROUP} == 0, got {rows}x{cols}"
        )
    weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        blocks.codes.to(torch.int32).contiguous(), 1
    )
    scales_and_zeros = (
        torch.stack([blocks.scale.t(), blocks.zero.t()], dim=-1).to(dtype).contiguous()
    )
    return PackedInt4(weight, scales_and_zeros, rows)


def int4_linear(x: torch.Tensor, packed: PackedInt4) -> torch.Tensor:
    """``x @ W.T`` for a 2-d ``x`` in the dtype the weight was packed for."""
    if packed.kernel in ("enclave", "amx"):
        kernels = cpu_ext.status().module
        if kernels is None:  # packed for our kernel, which has since been turned off
            raise RuntimeError("this weight is packed for the fused CPU kernels, not loaded now")
        product = kernels.q4_linear if packed.kernel == "enclave" else _tile_product(kernels)
        if product is None:
            raise RuntimeError("this weight is packed for a bf16 kernel this build does not offer")
        return product(x.contiguous(), packed.weight, packed.scales_and_zeros)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(
        x, packed.weight, GROUP, packed.scales_and_zeros
    )
