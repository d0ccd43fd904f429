"""The shared kernel references read gpt-oss checkpoints and compute the MoE exactly as transformers does.

The end-to-end tests quantise with our own ``quantize_mxfp4``, so a nibble-order or
exponent-bias mistake shared by our quantiser and dequantiser would go unseen there;
here the packed bytes are random and transformers' own dequantiser is the judge.
"""

from __future__ import annotations

import pytest
import torch

from llm.kernels import ExpertWeights, dequantize_mxfp4, fused_moe
from tests.unit.gptoss.factory import hf_config


def test_dequantize_matches_transformers_on_random_packed_bytes():
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (3, 40, 4, 16), dtype=torch.uint8, generator=generator)
    scales = torch.randint(110, 140, (3, 40, 4), dtype=torch.uint8, generator=generator)
    theirs = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)  # [E, in, out]
    ours = dequantize_mxfp4(blocks, scales, torch.float32)  # [E, out, in]
    assert torch.equal(ours, theirs.transpose(1, 2))


@pytest.mark.parametrize("gain", [1.0, 8.0])  # 8x drives gate/up far past the clamp limit 7
def test_fused_moe_matches_transformers_mlp(gain):
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

    config = hf_config()
    config._experts_implementation = "eager"
    mlp = GptOssMLP(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in mlp.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    hidden = torch.randn(1, 24, config.hidden_size, generator=generator) * gain
    with torch.no_grad():
        theirs, _ = mlp(hidden)
        router_logits = torch.nn.functional.linear(hidden[0], mlp.router.weight, mlp.router.bias)
    experts = mlp.experts
    gate_up_preact = hidden[0] @ experts.gate_up_proj[0] + experts.gate_up_proj_bias[0]
    if gain > 1:
        assert gate_up_preact.abs().max() > 3 * config.swiglu_limit, "the clamp is not exercised"
    weights = ExpertWeights(
        gate_up_bias=experts.gate_up_proj_bias.detach(),
        down_bias=experts.down_proj_bias.detach(),
        gate_up_weight=experts.gate_up_proj.detach().transpose(1, 2),
        down_weight=experts.down_proj.detach().transpose(1, 2),
        alpha=config.swiglu_alpha,
        limit=config.swiglu_limit,
    )
    ours = fused_moe(hidden[0], router_logits, config.num_experts_per_tok, weights)
    scale = theirs.abs().max().item()
    assert (ours - theirs[0]).abs().max().item() < 1e-5 * max(scale, 1.0)
