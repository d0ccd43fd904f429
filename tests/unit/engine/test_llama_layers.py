"""Our fused RMSNorm and roll-based RoPE compute exactly what transformers' Llama layers do."""

from __future__ import annotations

import torch

from llm.models.llama import RMSNorm, RotaryEmbedding, apply_rotary


def test_rms_norm_is_bit_identical_to_transformers_in_fp32_and_close_in_bf16():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    ours, theirs = RMSNorm(576, 1e-5), LlamaRMSNorm(576, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
    x = torch.randn(7, 576) * 3
    assert torch.equal(ours(x), theirs(x))
    ours.bfloat16(), theirs.bfloat16()
    assert torch.equal(ours(x.bfloat16()), theirs(x.bfloat16()))


def test_rope_is_bit_identical_to_transformers():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    torch.manual_seed(0)
    rotary = RotaryEmbedding(64, 100000.0, 512)
    positions = torch.tensor([0, 3, 17, 511])
    q, k = torch.randn(4, 9, 64), torch.randn(4, 3, 64)
    cos, sin_signed = rotary(positions, torch.float32)
    sin = rotary.sin_signed[positions].clone()
    sin[:, :32] *= -1  # HF's plain sin table
    theirs_q, theirs_k = apply_rotary_pos_emb(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], rotary.cos[positions][None], sin[None]
    )
    assert torch.equal(apply_rotary(q, cos, sin_signed), theirs_q[0].transpose(0, 1))
    assert torch.equal(apply_rotary(k, cos, sin_signed), theirs_k[0].transpose(0, 1))
