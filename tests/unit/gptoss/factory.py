"""Tiny random gpt-oss models: a transformers reference and the same weights as an HF checkpoint folder.

The experts are rounded to MXFP4 with our ``quantize_mxfp4`` and the transformers model
gets the dequantised values, so both compute exactly the same function; the folder is
written in the real checkpoint's layout (blocks/scales names, [E, out, in/32, 16],
legacy ``rope_scaling`` config, two shards with an index).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llm.kernels.mxfp4 import dequantize_mxfp4, quantize_mxfp4
from llm.models.gpt_oss_config import PUBLISHED_ROPE_SCALING

ROPE_SCALING = PUBLISHED_ROPE_SCALING
TINY = dict(
    num_hidden_layers=4,
    hidden_size=64,
    intermediate_size=96,
    head_dim=16,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_local_experts=8,
    num_experts_per_tok=2,
    sliding_window=8,
    vocab_size=256,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    eos_token_id=255,
)


def hf_config(**overrides):
    from transformers import GptOssConfig

    params = {**TINY, **overrides}
    return GptOssConfig(rope_parameters={**ROPE_SCALING, "rope_theta": 150000.0}, **params)


def build_reference(seed: int = 0, **overrides):
    """A transformers GptOssForCausalLM in fp32 with weights at scales that give O(1) logits."""
    from transformers import GptOssForCausalLM

    config = hf_config(**overrides)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = GptOssForCausalLM(config).eval()
    hidden = config.hidden_size
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("sinks"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            elif name.endswith("embed_tokens.weight"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            elif "bias" in name:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            else:
                fan_in = config.intermediate_size if name.endswith("down_proj") else hidden
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * fan_in**-0.5 * 1.5)
        for layer in model.model.layers:
            experts = layer.mlp.experts
            # Round to MXFP4 in checkpoint orientation; the reference then holds the exact dequantised values.
            for proj in ("gate_up_proj", "down_proj"):
                weight = getattr(experts, proj)
                blocks, scales = quantize_mxfp4(weight.transpose(1, 2))
                weight.copy_(dequantize_mxfp4(blocks, scales, torch.float32).transpose(1, 2))
    return model


def checkpoint_tensors(
    model, expert_format: str = "mxfp4", dtype: torch.dtype = torch.float32
) -> dict:
    """The reference's state dict in gpt-oss checkpoint naming; MXFP4 experts as uint8 blocks/scales."""
    tensors = {}
    for name, tensor in model.state_dict().items():
        proj = name.rsplit(".", 1)[-1]
        if expert_format == "mxfp4" and proj in ("gate_up_proj", "down_proj"):
            blocks, scales = quantize_mxfp4(tensor.transpose(1, 2))  # [E, in, out] -> [E, out, in]
            # The reference holds MXFP4-exact values, so this rounding must be lossless.
            assert torch.equal(
                dequantize_mxfp4(blocks, scales, torch.float32), tensor.transpose(1, 2)
            )
            tensors[f"{name}_blocks"], tensors[f"{name}_scales"] = blocks, scales
        else:
            tensors[name] = tensor.detach().to(dtype).contiguous()
    return tensors


def write_checkpoint(
    model,
    folder: Path,
    expert_format: str = "mxfp4",
    dtype: torch.dtype = torch.float32,
    shards: int = 2,
) -> Path:
    """Write config.json (legacy rope_scaling form, as the released checkpoints) and sharded safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    raw = {
        key: getattr(config, key)
        for key in (*TINY, "layer_types", "swiglu_limit", "attention_bias")
    }
    raw.update(
        model_type="gpt_oss",
        architectures=["GptOssForCausalLM"],
        rope_theta=150000,
        rope_scaling=dict(ROPE_SCALING),
        tie_word_embeddings=False,
    )
    if expert_format == "mxfp4":
        raw["quantization_config"] = {
            "quant_method": "mxfp4",
            "modules_to_not_convert": [
                "model.layers.*.self_attn",
                "model.layers.*.mlp.router",
                "model.embed_tokens",
                "lm_head",
            ],
        }
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    tensors = checkpoint_tensors(model, expert_format, dtype)
    names = sorted(tensors)
    weight_map = {}
    for shard in range(shards):
        part = names[shard::shards]
        file = f"model-{shard:05d}-of-{shards:05d}.safetensors"
        save_file({name: tensors[name] for name in part}, str(folder / file))
        weight_map.update(dict.fromkeys(part, file))
    if shards > 1:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map})
        )
    return folder
