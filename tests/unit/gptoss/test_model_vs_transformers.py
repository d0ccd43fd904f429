"""Our gpt-oss over the paged cache computes what transformers' GptOssForCausalLM computes."""

from __future__ import annotations

import copy

import pytest
import torch

from llm.loader.safetensors import load_gpt_oss
from tests.unit.gptoss.paged_harness import PagedHarness

WINDOW = 8


def _prompt(length: int, seed: int) -> list[int]:
    return torch.randint(0, 256, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _reference_logits(reference, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return reference(torch.tensor([tokens])).logits[0].float()


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    scale = theirs.abs().max().item()
    assert scale > 1.0, "reference logits are degenerate; the comparison would prove nothing"
    diff = (ours - theirs).abs().max().item()
    assert diff < 1e-4 * scale, f"max abs logit diff {diff:.3g} at logit scale {scale:.3g}"


def _reference_greedy(reference, prompt: list[int], steps: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(steps):  # full recompute each step: no cache, the plainest definition
        tokens.append(int(_reference_logits(reference, tokens)[-1].argmax()))
    return tokens[len(prompt) :]


@pytest.fixture(scope="module")
def mxfp4_model(mxfp4_dir):
    return load_gpt_oss(mxfp4_dir, dtype=torch.float32, load_tokenizer=False).model


@pytest.fixture(scope="module")
def dense_model(dense_dir):
    return load_gpt_oss(dense_dir, dtype=torch.float32, load_tokenizer=False).model


@pytest.mark.parametrize("which", ["mxfp4_model", "dense_model"])
def test_prefill_logits_match_transformers_past_the_window(which, reference, request):
    model = request.getfixturevalue(which)
    prompt = _prompt(3 * WINDOW + 5, seed=1)
    ours = PagedHarness(model).step({0: prompt}, all_logits=True)[0]
    _assert_close(ours, _reference_logits(reference, prompt))


def test_chunked_prefill_then_decode_logits_match(mxfp4_model, reference):
    prompt = _prompt(2 * WINDOW + 3, seed=2)
    harness = PagedHarness(mxfp4_model, seed=5)
    rows = [
        harness.step({0: prompt[:7]}, all_logits=True)[0],
        harness.step({0: prompt[7:13]}, all_logits=True)[0],
    ]
    rows += [harness.step({0: [token]})[0] for token in prompt[13:]]
    _assert_close(torch.cat(rows), _reference_logits(reference, prompt))


def test_greedy_32_steps_identical_batched(mxfp4_model, reference):
    prompts = {
        0: _prompt(WINDOW + 6, seed=3),
        1: _prompt(5, seed=4),
        2: _prompt(2 * WINDOW + 1, seed=6),
    }
    ours = PagedHarness(mxfp4_model, block_size=4, seed=7).greedy(
        prompts, steps=32, prefill_chunk=6
    )
    for seq, prompt in prompts.items():
        assert ours[seq] == _reference_greedy(reference, prompt, 32), f"sequence {seq} diverged"


def test_dense_greedy_identical(dense_model, reference):
    prompt = _prompt(WINDOW + 4, seed=8)
    ours = PagedHarness(dense_model).greedy({0: prompt}, steps=16)
    assert ours[0] == _reference_greedy(reference, prompt, 16)


def test_sinks_change_the_output(mxfp4_model):
    prompt = _prompt(12, seed=9)
    base = PagedHarness(mxfp4_model).step({0: prompt}, all_logits=True)[0]
    zeroed = copy.deepcopy(mxfp4_model)
    for layer in zeroed.model.layers:
        layer.self_attn.sinks.data.zero_()
    changed = PagedHarness(zeroed).step({0: prompt}, all_logits=True)[0]
    assert (base - changed).abs().max() > 1e-2


def test_sliding_window_changes_only_positions_past_the_window(mxfp4_model):
    prompt = _prompt(2 * WINDOW + 4, seed=10)
    base = PagedHarness(mxfp4_model).step({0: prompt}, all_logits=True)[0]
    full = copy.deepcopy(mxfp4_model)
    for layer in full.model.layers:
        layer.self_attn.sliding_window = None
    changed = PagedHarness(full).step({0: prompt}, all_logits=True)[0]
    diff = (base - changed).abs().amax(dim=-1)
    assert diff[:WINDOW].max() < 1e-5, "within the window both must agree"
    assert diff[WINDOW:].min() > 1e-3, "past the window the sliding layers must forget"


def test_layers_slide_where_the_config_says(mxfp4_model, reference):
    spec = mxfp4_model.kv_cache_spec()
    expected = [
        WINDOW if kind == "sliding_attention" else None for kind in reference.config.layer_types
    ]
    windows = [layer.self_attn.sliding_window for layer in mxfp4_model.model.layers]
    assert windows == expected and None in expected and WINDOW in expected
    assert (spec.num_layers, spec.num_kv_heads, spec.head_dim) == (4, 2, 16)
    assert spec.dtype == torch.float32
