"""Expert parallel MoE: ranks holding disjoint expert ranges sum to the unsplit layer (reference and Triton)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llm.kernels.expert_weights import ExpertWeights
from llm.kernels.moe_ref import fused_moe_ref
from llm.kernels.triton_moe import fused_moe_triton
from tests.unit.kernels.test_triton_moe import make_experts


def held_experts(experts: ExpertWeights, first: int, count: int) -> ExpertWeights:
    """The experts ``first .. first + count - 1`` as one rank of a split holds them."""
    cut = {
        field.name: getattr(experts, field.name)[first : first + count]
        for field in dataclasses.fields(experts)
        if isinstance(getattr(experts, field.name), torch.Tensor)
    }
    return dataclasses.replace(experts, first_expert=first, **cut)


@pytest.mark.parametrize("kernel", [fused_moe_ref, fused_moe_triton], ids=["reference", "triton"])
def test_ranks_sum_to_the_whole_layer(device, kernel):
    world = 4  # two experts each: some tokens have both, one or none of theirs on a rank
    experts = make_experts(8, 32, 32, True, device)
    hidden = torch.randn(7, 32, device=device)
    logits = torch.randn(7, 8, device=device)
    whole = fused_moe_ref(hidden, logits, 2, experts)
    share = 8 // world
    parts = [
        kernel(hidden, logits, 2, held_experts(experts, r * share, share)) for r in range(world)
    ]
    torch.testing.assert_close(sum(parts), whole, atol=2e-4, rtol=2e-4)


def test_held_range_past_the_router_is_refused(device):
    experts = held_experts(make_experts(8, 32, 32, True, device), 6, 2)
    logits = torch.randn(3, 7, device=device)  # a router narrower than the held range
    with pytest.raises(ValueError, match="router_logits has 7 experts"):
        fused_moe_triton(torch.randn(3, 32, device=device), logits, 2, experts)
