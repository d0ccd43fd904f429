"""Sparse mixture-of-experts feed-forward of gpt-oss: dispatch to the reference or Triton.

The operator is defined by ``llm.kernels.moe_ref`` (routing, clamped SwiGLU, weighted
sum); ``llm.kernels.triton_moe`` is the Triton kernel behind the same signature. The
backend comes from ``llm.kernels.backend``.
"""

from __future__ import annotations

import torch

from llm.kernels import moe_ref, triton_moe
from llm.kernels.backend import choose_backend
from llm.kernels.expert_weights import ExpertWeights


def fused_moe(
    hidden: torch.Tensor, router_logits: torch.Tensor, top_k: int, experts: ExpertWeights
) -> torch.Tensor:
    """MoE output [T, H] for ``hidden`` [T, H] and ``router_logits`` [T, E]."""
    backend = choose_backend(
        "fused_moe",
        hidden,
        router_logits,
        experts.gate_up_bias,
        experts.down_bias,
        experts.gate_up_blocks,
        experts.gate_up_scales,
        experts.down_blocks,
        experts.down_scales,
        experts.gate_up_weight,
        experts.down_weight,
    )
    if backend == "triton":
        return triton_moe.fused_moe_triton(hidden, router_logits, top_k, experts)
    return moe_ref.fused_moe_ref(hidden, router_logits, top_k, experts)
