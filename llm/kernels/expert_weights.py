"""The weights of one MoE layer's experts, in the form every MoE backend takes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm.kernels.mxfp4 import dequantize_mxfp4


@dataclass
class ExpertWeights:
    """One MoE layer's experts. MXFP4 when the ``*_blocks`` are set, dense when ``*_weight`` are.

    - ``gate_up_blocks`` uint8 [E, 2I, H/32, 16], ``gate_up_scales`` uint8 [E, 2I, H/32];
      or ``gate_up_weight`` [E, 2I, H]. ``gate_up_bias`` [E, 2I].
    - ``down_blocks`` uint8 [E, H, I/32, 16], ``down_scales`` uint8 [E, H, I/32];
      or ``down_weight`` [E, H, I]. ``down_bias`` [E, H].
    """

    gate_up_bias: torch.Tensor
    down_bias: torch.Tensor
    gate_up_blocks: torch.Tensor | None = None
    gate_up_scales: torch.Tensor | None = None
    down_blocks: torch.Tensor | None = None
    down_scales: torch.Tensor | None = None
    gate_up_weight: torch.Tensor | None = None
    down_weight: torch.Tensor | None = None
    alpha: float = 1.702
    limit: float = 7.0

    @property
    def is_mxfp4(self) -> bool:
        return self.gate_up_blocks is not None

    @property
    def num_experts(self) -> int:
        return self.gate_up_bias.shape[0]

    def gate_up(self, expert: int, dtype: torch.dtype) -> torch.Tensor:
        """Dense [2I, H] matrix of one expert (dequantised on the fly when MXFP4)."""
        if self.is_mxfp4:
            return dequantize_mxfp4(self.gate_up_blocks[expert], self.gate_up_scales[expert], dtype)
        return self.gate_up_weight[expert].to(dtype)

    def down(self, expert: int, dtype: torch.dtype) -> torch.Tensor:
        """Dense [H, I] matrix of one expert (dequantised on the fly when MXFP4)."""
        if self.is_mxfp4:
            return dequantize_mxfp4(self.down_blocks[expert], self.down_scales[expert], dtype)
        return self.down_weight[expert].to(dtype)
