"""config.json parsing and YaRN frequencies, checked against transformers' own computation."""

from __future__ import annotations

import pytest
import torch

from llm.models.gpt_oss_config import GptOssConfig, GptOssConfigError, rope_frequencies

REAL_20B = {  # the released gpt-oss-20b config.json, trimmed to what we read
    "model_type": "gpt_oss",
    "vocab_size": 201088,
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_hidden_layers": 24,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "num_local_experts": 32,
    "num_experts_per_tok": 4,
    "experts_per_token": 4,
    "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 131072,
    "swiglu_limit": 7.0,
    "attention_bias": True,
    "eos_token_id": 200002,
    "rope_theta": 150000,
    "rope_scaling": {
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "factor": 32.0,
        "original_max_position_embeddings": 4096,
        "rope_type": "yarn",
        "truncate": False,
    },
}


def _transformers_yarn(raw: dict):
    from transformers import GptOssConfig as HFConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    fields = {
        k: v
        for k, v in raw.items()
        if k not in ("model_type", "rope_theta", "rope_scaling", "experts_per_token")
    }
    config = HFConfig(
        rope_parameters={**raw["rope_scaling"], "rope_theta": raw["rope_theta"]}, **fields
    )
    return ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")


@pytest.mark.parametrize("truncate", [False, True])
def test_yarn_matches_transformers_on_the_real_config(truncate):
    raw = {**REAL_20B, "rope_scaling": {**REAL_20B["rope_scaling"], "truncate": truncate}}
    ours, ours_scale = rope_frequencies(GptOssConfig.from_dict(raw))
    theirs, their_scale = _transformers_yarn(raw)
    assert torch.equal(ours, theirs.float())
    assert ours_scale == pytest.approx(their_scale, rel=0, abs=1e-12)
    assert ours_scale == pytest.approx(0.1 * torch.log(torch.tensor(32.0)).item() + 1.0)


def test_truncate_changes_the_frequencies():
    # Guards the test above: if truncate were ignored, both parametrisations would pass trivially.
    a, _ = rope_frequencies(GptOssConfig.from_dict(REAL_20B))
    b, _ = rope_frequencies(
        GptOssConfig.from_dict(
            {**REAL_20B, "rope_scaling": {**REAL_20B["rope_scaling"], "truncate": True}}
        )
    )
    assert not torch.equal(a, b)


def test_real_config_parses():
    config = GptOssConfig.from_dict(REAL_20B)
    assert config.window_of(0) == 128 and config.window_of(1) is None
    assert config.eos_token_ids == [200002]
    assert (config.num_local_experts, config.num_experts_per_tok, config.head_dim) == (32, 4, 64)


def test_transformers5_rope_parameters_form_is_equivalent():
    legacy = GptOssConfig.from_dict(REAL_20B)
    raw = {k: v for k, v in REAL_20B.items() if k not in ("rope_scaling", "rope_theta")}
    raw["rope_parameters"] = {**REAL_20B["rope_scaling"], "rope_theta": 150000}
    modern = GptOssConfig.from_dict(raw)
    assert modern.rope == legacy.rope


def test_default_layer_types_alternate_starting_with_sliding():
    raw = {k: v for k, v in REAL_20B.items() if k != "layer_types"}
    assert GptOssConfig.from_dict({**raw, "num_hidden_layers": 36}).layer_types[:3] == [
        "sliding_attention",
        "full_attention",
        "sliding_attention",
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "llama"}, "not 'gpt_oss'"),
        ({"layer_types": ["sliding_attention"] * 3}, "layer_types has 3 entries"),
        ({"layer_types": ["local"] * 24}, "unknown layer_types"),
        ({"num_key_value_heads": 7}, "not a multiple"),
        ({"num_experts_per_tok": 33}, "num_experts_per_tok"),
        ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "rope type"),
        ({"hidden_size": None}, "malformed"),
    ],
)
def test_bad_config_names_the_problem(change, message):
    with pytest.raises(GptOssConfigError, match=message):
        GptOssConfig.from_dict({**REAL_20B, **change})


def test_missing_field_is_named():
    raw = {k: v for k, v in REAL_20B.items() if k != "vocab_size"}
    with pytest.raises(GptOssConfigError, match="vocab_size"):
        GptOssConfig.from_dict(raw)


def test_rotary_matches_transformers_at_long_positions():
    from transformers.models.gpt_oss.modeling_gpt_oss import (
        GptOssRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    from llm.models.gpt_oss import YarnRotary
    from tests.unit.gptoss.factory import hf_config

    hf = hf_config()
    config = GptOssConfig.from_dict({**hf.to_dict(), "model_type": "gpt_oss"})
    positions = torch.tensor([0, 1, 127, 4095, 4096, 65_000, 131_071])
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(len(positions), 4, 16, generator=generator)
    k = torch.randn(len(positions), 2, 16, generator=generator)
    ours_q, ours_k = YarnRotary(config)(q, k, positions)
    cos, sin = GptOssRotaryEmbedding(hf)(q, positions[None])
    theirs_q, theirs_k = apply_rotary_pos_emb(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin
    )
    assert torch.allclose(ours_q, theirs_q[0].transpose(0, 1), atol=1e-5)
    assert torch.allclose(ours_k, theirs_k[0].transpose(0, 1), atol=1e-5)
