"""Triton fused MoE (MXFP4 and dense experts) against llm.kernels.moe.fused_moe_ref."""

from __future__ import annotations

import pytest
import torch

from llm.kernels.expert_weights import ExpertWeights
from llm.kernels.moe_ref import fused_moe_ref, route
from llm.kernels.mxfp4 import quantize_mxfp4
from llm.kernels.triton_moe import fused_moe_triton
from llm.kernels.triton_moe_routing import align_by_expert, route_and_align
from tests.unit.kernels.conftest import requires_cuda_bf16


def make_experts(
    num_experts: int,
    hidden: int,
    intermediate: int,
    mxfp4: bool,
    device: torch.device,
    limit: float = 7.0,
) -> ExpertWeights:
    gate_up = torch.randn(num_experts, 2 * intermediate, hidden, device=device) * 0.2
    down = torch.randn(num_experts, hidden, intermediate, device=device) * 0.2
    biases = dict(
        gate_up_bias=torch.randn(num_experts, 2 * intermediate, device=device) * 0.5,
        down_bias=torch.randn(num_experts, hidden, device=device) * 0.5,
        limit=limit,
    )
    if not mxfp4:
        return ExpertWeights(gate_up_weight=gate_up, down_weight=down, **biases)
    gate_up_blocks, gate_up_scales = quantize_mxfp4(gate_up)
    down_blocks, down_scales = quantize_mxfp4(down)
    return ExpertWeights(
        gate_up_blocks=gate_up_blocks,
        gate_up_scales=gate_up_scales,
        down_blocks=down_blocks,
        down_scales=down_scales,
        **biases,
    )


def _compare(hidden, logits, top_k, experts, **knobs):
    expected = fused_moe_ref(hidden, logits, top_k, experts)
    got = fused_moe_triton(hidden, logits, top_k, experts, **knobs)
    tol = 2e-4 if hidden.dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("mxfp4", [True, False], ids=["mxfp4", "dense"])
@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_matches_reference(device, mxfp4, top_k):
    experts = make_experts(8, 64, 64, mxfp4, device)
    hidden = torch.randn(13, 64, device=device)  # 13 tokens: not a multiple of any block
    logits = torch.randn(13, 8, device=device)
    _compare(hidden, logits, top_k, experts, block_m=16, block_n=32, block_k=32)


@pytest.mark.parametrize("mxfp4", [True, False], ids=["mxfp4", "dense"])
def test_idle_expert_and_expert_taking_every_token(device, mxfp4):
    experts = make_experts(4, 64, 32, mxfp4, device)
    hidden = torch.randn(37, 64, device=device) * 3  # large enough that the clamp engages
    logits = torch.randn(37, 4, device=device)
    logits[:, 0] = -1e4  # expert 0 never chosen
    logits[:, 2] = 1e4  # expert 2 chosen by every token
    _compare(hidden, logits, 2, experts, block_m=16, block_n=32, block_k=64)


def test_multiple_tiles_in_every_dimension(device):
    # hidden 96 = 3 K-steps of 32 and 2 N-tiles of 64 (second one partial); 21 tokens x top-3
    experts = make_experts(4, 96, 96, True, device, limit=1.0)
    hidden = torch.randn(21, 96, device=device)
    _compare(
        hidden, torch.randn(21, 4, device=device), 3, experts, block_m=16, block_n=64, block_k=32
    )


def test_dense_odd_sizes_are_masked(device):
    experts = make_experts(3, 40, 24, False, device)
    hidden = torch.randn(5, 40, device=device)
    _compare(
        hidden, torch.randn(5, 3, device=device), 2, experts, block_m=16, block_n=16, block_k=32
    )


def test_single_token_default_knobs(device):
    experts = make_experts(8, 64, 64, True, device)
    _compare(torch.randn(1, 64, device=device), torch.randn(1, 8, device=device), 4, experts)


def test_no_tokens_gives_empty_output(device):
    experts = make_experts(2, 32, 32, True, device)
    out = fused_moe_triton(
        torch.zeros(0, 32, device=device), torch.zeros(0, 2, device=device), 1, experts
    )
    assert out.shape == (0, 32)


def test_align_by_expert_groups_each_pair_once(device):
    chosen = torch.tensor([[3, 0], [3, 1], [0, 3], [3, 2], [1, 3]], device=device)
    sorted_pairs, block_expert = align_by_expert(chosen, num_experts=5, block_m=4)
    num_pairs = chosen.numel()
    flat = chosen.flatten()
    seen = []
    for block, expert in enumerate(block_expert.tolist()):
        pairs = [p for p in sorted_pairs[block * 4 : (block + 1) * 4].tolist() if p < num_pairs]
        if expert < 0:
            assert pairs == []
            continue
        assert pairs and all(flat[p].item() == expert for p in pairs)
        seen += pairs
    assert sorted(seen) == list(range(num_pairs))
    assert 4 not in block_expert.tolist()  # expert 4 got nothing, so it owns no block


def test_rejects_bad_top_k(device):
    experts = make_experts(2, 32, 32, True, device)
    with pytest.raises(ValueError, match="top_k"):
        fused_moe_triton(
            torch.zeros(1, 32, device=device), torch.zeros(1, 2, device=device), 3, experts
        )


def test_rejects_hidden_size_mismatch(device):
    experts = make_experts(2, 32, 32, True, device)
    with pytest.raises(ValueError, match="hidden size"):
        fused_moe_triton(
            torch.zeros(1, 64, device=device), torch.zeros(1, 2, device=device), 1, experts
        )


def test_mxfp4_blocks_in_a_non_contiguous_layout(device):
    experts = make_experts(4, 64, 32, True, device)
    # same values, stored [E, rows, 16, K/32] and viewed back: the kernel must not assume strides
    blocks = experts.gate_up_blocks
    experts.gate_up_blocks = blocks.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    assert not experts.gate_up_blocks.is_contiguous()
    hidden = torch.randn(6, 64, device=device)
    _compare(
        hidden, torch.randn(6, 4, device=device), 2, experts, block_m=16, block_n=32, block_k=32
    )


@requires_cuda_bf16
@pytest.mark.parametrize("tokens", [1, 70])
def test_bf16_on_gpu_is_close_to_the_fp32_reference(device, tokens):
    experts = make_experts(8, 128, 96, True, device)
    experts.gate_up_bias, experts.down_bias = (
        experts.gate_up_bias.bfloat16(),
        experts.down_bias.bfloat16(),
    )
    hidden = torch.randn(tokens, 128, device=device, dtype=torch.bfloat16)
    logits = torch.randn(tokens, 8, device=device)
    got = fused_moe_triton(hidden, logits, 4, experts).float()
    expected = fused_moe_ref(hidden.float(), logits, 4, experts)
    assert ((got - expected).norm() / expected.norm()).item() < 2e-2


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="fused_moe picks Triton only for CUDA tensors"
)
def test_public_fused_moe_dispatches_to_triton_on_gpu(device, monkeypatch):
    import llm.kernels.triton_moe as triton_moe
    from llm.kernels.moe import fused_moe

    calls = []
    real = triton_moe.fused_moe_triton
    monkeypatch.setattr(
        triton_moe, "fused_moe_triton", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    experts = make_experts(4, 64, 32, True, device)
    hidden, logits = torch.randn(3, 64, device=device), torch.randn(3, 4, device=device)
    torch.testing.assert_close(
        fused_moe(hidden, logits, 2, experts),
        fused_moe_ref(hidden, logits, 2, experts),
        atol=2e-4,
        rtol=2e-4,
    )
    assert calls == [1]


@pytest.mark.parametrize(
    "tokens,top_k,num_experts,block_m",
    [(1, 4, 32, 16), (13, 2, 8, 16), (37, 3, 5, 4), (64, 4, 32, 16)],
)
def test_one_program_routing_equals_torch_routing(device, tokens, top_k, num_experts, block_m):
    logits = torch.randn(tokens, num_experts, device=device)
    logits[:, 0] = -30.0  # an expert nobody picks
    weights, sorted_pairs, block_expert = route_and_align(
        logits, top_k, num_experts, block_m, fused=True
    )
    expected_weights, chosen = route(logits, top_k)
    expected_pairs, expected_blocks = align_by_expert(chosen, num_experts, block_m)
    torch.testing.assert_close(weights, expected_weights)
    assert torch.equal(sorted_pairs, expected_pairs)
    assert torch.equal(block_expert, expected_blocks)


def test_one_program_routing_refuses_large_batches(device):
    with pytest.raises(ValueError, match="too large"):
        route_and_align(torch.zeros(4096, 32, device=device), 4, 32, 64, fused=True)


@pytest.mark.parametrize("fused_routing", [True, False])
def test_both_routing_paths_give_the_reference(device, fused_routing):
    experts = make_experts(4, 64, 32, True, device)
    hidden = torch.randn(9, 64, device=device)
    _compare(
        hidden,
        torch.randn(9, 4, device=device),
        2,
        experts,
        block_m=16,
        block_n=32,
        block_k=32,
        fused_routing=fused_routing,
    )
