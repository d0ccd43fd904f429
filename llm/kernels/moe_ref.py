"""Torch reference of gpt-oss's sparse mixture-of-experts: route, run only the chosen experts, combine.

Per token: the router's logits pick the top-k experts; their weights are the softmax
over those k logits. Expert e computes
``gate_up = x @ W1[e].T + b1[e]`` (rows interleaved: even rows gate, odd rows up),
``h = (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g)`` with ``g = clamp(gate, max=limit)``,
``y = h @ W2[e].T + b2[e]``, and the token's output is the weighted sum over its experts.
Weights are in checkpoint orientation [out, in], either MXFP4 (blocks + scales) or dense.
"""

from __future__ import annotations

import torch

from llm.kernels.expert_weights import ExpertWeights


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


def fused_moe_ref(
    hidden: torch.Tensor, router_logits: torch.Tensor, top_k: int, experts: ExpertWeights
) -> torch.Tensor:
    """Torch reference for :func:`fused_moe`: loop over experts that received tokens, fp32 math.

    Experts outside the held range (``ExpertWeights.first_expert``, expert parallel) are
    skipped: their pairs add nothing on this rank.
    """
    weights, chosen = route(router_logits, top_k)
    if experts.first_expert:
        chosen = chosen - experts.first_expert
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    x = hidden.float()
    for expert in torch.unique(chosen).tolist():
        if not 0 <= expert < experts.num_experts:
            continue  # routed to an expert another rank holds
        token_idx, slot = torch.nonzero(chosen == expert, as_tuple=True)
        gate_up = (
            x[token_idx] @ experts.gate_up(expert, torch.float32).T
            + experts.gate_up_bias[expert].float()
        )
        h = swiglu_clamped(gate_up, experts.alpha, experts.limit)
        y = h @ experts.down(expert, torch.float32).T + experts.down_bias[expert].float()
        out.index_add_(0, token_idx, y * weights[token_idx, slot].unsqueeze(-1))
    return out.to(hidden.dtype)
