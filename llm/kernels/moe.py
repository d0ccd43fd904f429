"""Sparse mixture-of-experts feed-forward of gpt-oss: route, run only the chosen experts, combine.

Per token: the router's logits pick the top-k experts; their weights are the softmax
over those k logits. Expert e computes
``gate_up = x @ W1[e].T + b1[e]`` (rows interleaved: even rows gate, odd rows up),
``h = (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g)`` with ``g = clamp(gate, max=limit)``,
``y = h @ W2[e].T + b2[e]``, and the token's output is the weighted sum over its experts.
Weights are in checkpoint orientation [out, in], either MXFP4 (blocks + scales) or dense.
"""

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


def route(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts per token and their weights (softmax over the k chosen logits), fp32."""
    top_logits, top_experts = torch.topk(router_logits.float(), top_k, dim=-1)
    return torch.softmax(top_logits, dim=-1), top_experts


def swiglu_clamped(gate_up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """gpt-oss's SwiGLU on interleaved [..., 2I] input: clamp, gate * sigmoid(alpha * gate), (up + 1)."""
    gate, up = gate_up[..., 0::2], gate_up[..., 1::2]
    gate = gate.clamp(max=limit)
    up = up.clamp(min=-limit, max=limit)
    return (up + 1) * (gate * torch.sigmoid(gate * alpha))


def fused_moe(
    hidden: torch.Tensor, router_logits: torch.Tensor, top_k: int, experts: ExpertWeights
) -> torch.Tensor:
    """MoE output [T, H] for ``hidden`` [T, H] and ``router_logits`` [T, E]."""
    if hidden.is_cuda:
        from llm.kernels.triton_moe import fused_moe_triton

        return fused_moe_triton(hidden, router_logits, top_k, experts)
    return fused_moe_ref(hidden, router_logits, top_k, experts)


def fused_moe_ref(
    hidden: torch.Tensor, router_logits: torch.Tensor, top_k: int, experts: ExpertWeights
) -> torch.Tensor:
    """Torch reference for :func:`fused_moe`: loop over experts that received tokens, fp32 math."""
    weights, chosen = route(router_logits, top_k)
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    x = hidden.float()
    for expert in torch.unique(chosen).tolist():
        token_idx, slot = torch.nonzero(chosen == expert, as_tuple=True)
        gate_up = (
            x[token_idx] @ experts.gate_up(expert, torch.float32).T
            + experts.gate_up_bias[expert].float()
        )
        h = swiglu_clamped(gate_up, experts.alpha, experts.limit)
        y = h @ experts.down(expert, torch.float32).T + experts.down_bias[expert].float()
        out.index_add_(0, token_idx, y * weights[token_idx, slot].unsqueeze(-1))
    return out.to(hidden.dtype)
