"""8-bit weights as GGUF's Q8_0 stores them, multiplied by the fused CPU kernel.

Q8_0 keeps each row in blocks of 32 int8 codes with one fp16 scale: ``w = d * q``. Small
GGUF models store their token embedding this way, and with tied embeddings it is also the
LM head, the largest single matmul of a decode step (SmolLM2-135M: 49,152 x 576). Read as
int8 it is half the bytes of bf16, and the values are the file's own (a bf16 copy rounds
every weight). ``cpu_kernels.cpp``'s ``q8_linear`` multiplies up to ``MAX_ROWS`` rows;
beyond a few rows the prepacked bf16 GEMM wins (``llm.kernels.cpu_paths`` measures where).
On a CPU with AMX, bf16 rows go to ``q8_linear_amx`` instead, on a tile layout of the same
codes made once at load: still a byte a weight, multiplied on AMX, so it can keep up with
oneDNN's bf16 GEMM at decode batch sizes where the vector kernel could not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm.kernels import cpu_ext

GROUP = 32  # elements per Q8_0 block
MAX_ROWS = 16  # the int8 kernel's limit
AMX_MAX_ROWS = 64  # the most rows a decode step gives the AMX kernel (cpu_paths.ROW_COUNTS)


@dataclass
class Q8Blocks:
    """An 8-bit weight [rows, cols]: int8 codes and one fp32 scale per 32 columns, and where
    the CPU has AMX the same codes laid out as its tiles (``with_amx_tiles``) for bf16 rows."""

    codes: torch.Tensor  # int8 [rows, cols]
    scale: torch.Tensor  # float32 [rows, cols // 32]
    tiles: torch.Tensor | None = None  # uint8 [rows // 16, cols // 32, 512]: q + 128
    tile_scales: torch.Tensor | None = None  # float32 [rows // 16, cols // 32, 16]

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape

    def dequantize(self) -> torch.Tensor:
        """The fp32 weight these blocks encode (the reference for the kernel)."""
        rows, cols = self.codes.shape
        grouped = self.codes.float().view(rows, cols // GROUP, GROUP)
        return (grouped * self.scale[..., None]).view(rows, cols)


def q8_from_gguf(raw: torch.Tensor, shape: tuple[int, int]) -> Q8Blocks:
    """Split GGUF Q8_0 bytes of a [rows, cols] tensor into codes and scales."""
    rows, cols = shape
    if cols % GROUP:
        raise ValueError(f"a Q8_0 row must hold whole {GROUP}-element blocks, got {cols} columns")
    blocks = raw.view(torch.uint8).reshape(rows * cols // GROUP, 2 + GROUP)
    scale = blocks[:, 0:2].contiguous().view(torch.float16).float().reshape(rows, cols // GROUP)
    codes = blocks[:, 2:].contiguous().view(torch.int8).reshape(rows, cols)
    return Q8Blocks(codes, scale.contiguous())


AMX_COLUMNS = 16  # output columns per AMX tile


def amx_tiles_offered() -> bool:
    """Whether our CPU kernels multiply bf16 rows by Q8_0 blocks on AMX here."""
    return "q8_linear_amx" in cpu_ext.status().fast_kernels


def with_amx_tiles(blocks: Q8Blocks) -> Q8Blocks:
    """``blocks`` with the tile layout ``q8_linear_amx`` reads, where it applies (AMX granted,
    whole groups of 16 rows); else ``blocks`` as they are. Per 16 output columns and
    32-column block, 512 bytes: tile row p holds the 16 columns' codes for k = 2p and
    2p + 1 side by side, each as u = q + 128 (``q8_codes_to_tiles`` in cpu_kernels.cpp);
    the scales as [groups, blocks, 16]."""
    rows, cols = blocks.shape
    if not amx_tiles_offered() or rows % AMX_COLUMNS:
        return blocks
    groups, per_row = rows // AMX_COLUMNS, cols // GROUP
    u = (blocks.codes.view(torch.uint8) ^ 0x80).view(groups, AMX_COLUMNS, per_row, GROUP // 2, 2)
    # [group, column, block, k pair, k parity] -> [group, block, k pair, column, parity]
    tiles = u.permute(0, 2, 3, 1, 4).reshape(groups, per_row, AMX_COLUMNS * GROUP).contiguous()
    scales = blocks.scale.view(groups, AMX_COLUMNS, per_row).transpose(1, 2).contiguous()
    return Q8Blocks(blocks.codes, blocks.scale, tiles, scales)


def row_limit(blocks: Q8Blocks, dtype: torch.dtype) -> int:
    """The most rows ``q8_linear`` takes in one call for rows of ``dtype``: the int8 kernel's
    ``MAX_ROWS``, or for bf16 rows on AMX tiles ``AMX_MAX_ROWS`` (it loops over tiles of 16)."""
    return AMX_MAX_ROWS if blocks.tiles is not None and dtype == torch.bfloat16 else MAX_ROWS


def q8_available() -> bool:
    """Whether the fused CPU kernels are loaded with a fast 8-bit matmul (AVX-512 builds)."""
    return "q8_linear" in cpu_ext.status().fast_kernels


def q8_linear(x: torch.Tensor, blocks: Q8Blocks) -> torch.Tensor:
    """``x @ W.T`` for a 2-d ``x`` of at most ``row_limit`` rows, in ``x``'s dtype."""
    kernels = cpu_ext.kernels()
    if kernels is None:
        raise RuntimeError(f"q8_linear needs the fused CPU kernels: {cpu_ext.status().reason}")
    if blocks.tiles is not None and x.dtype == torch.bfloat16:
        return kernels.q8_linear_amx(x.contiguous(), blocks.tiles, blocks.tile_scales)
    return kernels.q8_linear(x.contiguous(), blocks.codes, blocks.scale)
