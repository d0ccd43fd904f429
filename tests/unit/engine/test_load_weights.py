"""``load_weights`` takes the file's tensors one at a time, fusing q/k/v and gate/up as they
complete, so a load never holds the whole set beside the model."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from llm.models.llama import LlamaConfig, LlamaForCausalLM
from tests.unit.engine.tp_helpers import random_llama

CONFIG = LlamaConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
)


def file_tensors(model: LlamaForCausalLM) -> list[tuple[str, torch.Tensor]]:
    """The model's weights under the names and in the order a GGUF file gives them
    (``gguf.iter_weights``): per layer, q, k and v apart, then o, gate, up, down."""
    q, kv = CONFIG.num_heads * CONFIG.head_dim, CONFIG.num_kv_heads * CONFIG.head_dim
    out = [("embed_tokens.weight", model.embed_tokens.weight)]
    for i, layer in enumerate(model.layers):
        p = f"layers.{i}."
        wq, wk, wv = layer.self_attn.qkv_proj.weight.split([q, kv, kv])
        gate, up = layer.mlp.gate_up_proj.weight.chunk(2)
        out += [
            (p + "input_norm.weight", layer.input_norm.weight),
            (p + "q_proj", wq),
            (p + "k_proj", wk),
            (p + "v_proj", wv),
            (p + "o_proj.weight", layer.self_attn.o_proj.weight),
            (p + "post_attention_norm.weight", layer.post_attention_norm.weight),
            (p + "gate_proj", gate),
            (p + "up_proj", up),
            (p + "down_proj.weight", layer.mlp.down_proj.weight),
        ]
    return out + [("norm.weight", model.norm.weight)]


def test_a_stream_loads_what_a_dict_loads_and_drops_each_tensor_once_copied():
    source = random_llama(CONFIG, seed=3)
    tensors = [(name, value.detach().clone()) for name, value in file_tensors(source)]
    from_dict = LlamaForCausalLM(CONFIG)
    from_dict.load_weights(dict(tensors))

    yielded: list[weakref.ref] = []
    most_alive = 0

    def stream():
        nonlocal most_alive
        for name, value in tensors:
            copy = value.clone()  # the generator's own tensor, as a dequantised one is
            yielded.append(weakref.ref(copy))
            yield name, copy
            del copy
            gc.collect()
            most_alive = max(most_alive, sum(ref() is not None for ref in yielded))

    streamed = LlamaForCausalLM(CONFIG)
    streamed.load_weights(stream())
    for (name, a), b in zip(
        from_dict.state_dict().items(), streamed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    for name, value in source.state_dict().items():
        assert torch.equal(streamed.state_dict()[name], value), name
    assert most_alive <= 2  # q and k wait for v; gate waits for up; the rest go at once


def test_a_fused_projection_missing_a_part_names_what_the_file_has():
    tensors = [(n, v) for n, v in file_tensors(random_llama(CONFIG)) if n != "layers.1.v_proj"]
    with pytest.raises(
        ValueError,
        match=r"'layers.1.q_proj'.*qkv_proj.weight' is made of q_proj, k_proj, v_proj, "
        r"and the file has only q_proj, k_proj",
    ):
        LlamaForCausalLM(CONFIG).load_weights(iter(tensors))


def test_unknown_misshapen_and_missing_weights_are_refused():
    tensors = file_tensors(random_llama(CONFIG))
    with pytest.raises(ValueError, match="unexpected weight 'layers.0.rope_freqs'"):
        LlamaForCausalLM(CONFIG).load_weights(iter([("layers.0.rope_freqs", torch.ones(4))]))
    bad = [(n, v[:, :-1] if n == "layers.0.o_proj.weight" else v) for n, v in tensors]
    with pytest.raises(ValueError, match=r"'layers.0.self_attn.o_proj.weight' has shape"):
        LlamaForCausalLM(CONFIG).load_weights(iter(bad))
    with pytest.raises(ValueError, match="weights missing from the file: \\['norm.weight'\\]"):
        LlamaForCausalLM(CONFIG).load_weights(iter(tensors[:-1]))
