"""8-bit weights as GGUF's Q8_0 stores them, multiplied by the fused CPU kernel.

Q8_0 keeps each row in blocks of 32 int8 codes with one fp16 scale: ``w = d * q``. Small
GGUF models store their token embedding this way, and with tied embeddings it is also the
LM head, the largest single matmul of a decode step (SmolLM2-135M: 49,152 x 576). Read as
int8 it is half the bytes of bf16, and the values are the file's own (a bf16 copy rounds
every weight). ``cpu_kernels.cpp``'s ``q8_linear`` multiplies up to ``MAX_ROWS`` rows;
beyond a few rows the prepacked bf16 GEMM wins (``llm.kernels.cpu_paths`` measures where).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm.kernels import cpu_ext

GROUP = 32  # elements per Q8_0 block
MAX_ROWS = 16  # the kernel's limit


@dataclass
class Q8Blocks:
    """An 8-bit weight [rows, cols]: int8 codes and one fp32 scale per 32 columns."""

    codes: torch.Tensor  # int8 [rows, cols]
    scale: torch.Tensor  # float32 [rows, cols // 32]

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


def q8_available() -> bool:
    """Whether the fused CPU kernels are loaded with a fast 8-bit matmul (AVX-512 builds)."""
    return "q8_linear" in cpu_ext.status().fast_kernels


def q8_linear(x: torch.Tensor, blocks: Q8Blocks) -> torch.Tensor:
    """``x @ W.T`` for a 2-d ``x`` of at most ``MAX_ROWS`` rows, in ``x``'s dtype."""
    kernels = cpu_ext.kernels()
    if kernels is None:
        raise RuntimeError(f"q8_linear needs the fused CPU kernels: {cpu_ext.status().reason}")
    return kernels.q8_linear(x.contiguous(), blocks.codes, blocks.scale)
