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

    Expert parallel (``llm.parallel``): a rank holds experts ``first_expert ..
    first_expert + E - 1`` of the router's wider set; the router logits then have more
    columns than E, routing runs over all of them, and only pairs routed to the held
    experts are computed (the others contribute zero here and come from other ranks).
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
    first_expert: int = 0

    @property
    def is_mxfp4(self) -> bool:
        return self.gate_up_blocks is not None

    @property
    def num_experts(self) -> int:
        return self.gate_up_bias.shape[0]

    def mxfp4_parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gate_up_blocks, gate_up_scales, down_blocks, down_scales); an error when any is unset.

        One place that turns "is MXFP4" into four non-None tensors, so callers need no
        per-field None checks and a half-filled instance fails with a clear message.
        """
        parts = (self.gate_up_blocks, self.gate_up_scales, self.down_blocks, self.down_scales)
        if parts[0] is None or parts[1] is None or parts[2] is None or parts[3] is None:
            raise ValueError("ExpertWeights is not MXFP4: blocks and scales must all be set")
        return parts[0], parts[1], parts[2], parts[3]

    def dense_parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate_up_weight, down_weight); an error when either is unset."""
        if self.gate_up_weight is None or self.down_weight is None:
            raise ValueError("ExpertWeights holds neither MXFP4 blocks nor dense weights")
        return self.gate_up_weight, self.down_weight

    def gate_up(self, expert: int, dtype: torch.dtype) -> torch.Tensor:
        """Dense [2I, H] matrix of one expert (dequantised on the fly when MXFP4)."""
        if self.is_mxfp4:
            blocks, scales, _, _ = self.mxfp4_parts()
            return dequantize_mxfp4(blocks[expert], scales[expert], dtype)
        return self.dense_parts()[0][expert].to(dtype)

    def down(self, expert: int, dtype: torch.dtype) -> torch.Tensor:
        """Dense [H, I] matrix of one expert (dequantised on the fly when MXFP4)."""
        if self.is_mxfp4:
            _, _, blocks, scales = self.mxfp4_parts()
            return dequantize_mxfp4(blocks[expert], scales[expert], dtype)
        return self.dense_parts()[1][expert].to(dtype)
