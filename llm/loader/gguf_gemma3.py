"""Load a Gemma 3 GGUF (``general.architecture == "gemma3"``) into ``Gemma3ForCausalLM``.

Every tensor is dequantised to fp32 at load (``llm.loader.gguf.dequantize``: Q8_0 by
torch, K-quants and Q5_0 through ``gguf.quants``) and cast to the engine's dtype; there is
no native 4-bit path for these types (files seen here use Q5_0, Q8_0, Q4_K and Q6_K).

The metadata lacks some of Gemma 3's hyper-parameters; where it does, we use the values
llama.cpp hard-codes for this architecture (and HF's ``Gemma3TextConfig`` defaults): every
6th layer global, local RoPE base 10000, scores scaled by head_dim ** -0.5. Unlike
llama, llama.cpp does not permute Gemma's Q/K rows (its Gemma RoPE is rotate-half), and
it stores RMSNorm weights as 1 + w, which ``GemmaRMSNorm`` uses as they are.

A file without a chat template (the pretrained, not instruction-tuned, checkpoints) gets
Gemma's turn format (``GEMMA_CHAT_TEMPLATE``), and ``<end_of_turn>`` ends generation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llm.loader.gguf import _LAYER_NAMES as _LLAMA_LAYER_NAMES
from llm.loader.gguf import _field, dequantize, open_gguf, text_side
from llm.loader.loaded import LoadedModel, LoaderError
from llm.models.gemma3 import Gemma3Config, Gemma3ForCausalLM

# Gemma's turn format for text (transformers' Gemma 3 template without its image parts):
# a system message is prepended to the first user turn; "assistant" is called "model".
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<start_of_turn>model\n' }}"
    "{%- endif -%}"
)
END_OF_TURN = "<end_of_turn>"

# GGUF tensor name (after "blk.N.") -> our parameter name (after "layers.N."): llama's
# projections, plus Gemma's four norms per layer and the q/k norms
_LAYER_NAMES = {
    **_LLAMA_LAYER_NAMES,
    "post_attention_norm.weight": "post_attention_norm.weight",
    "ffn_norm.weight": "pre_feedforward_norm.weight",
    "post_ffw_norm.weight": "post_feedforward_norm.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
}


def read_gemma3_config(reader) -> Gemma3Config:
    """Hyper-parameters from the ``gemma3.*`` keys, llama.cpp's defaults for the missing ones."""

    def key(name: str, default=None):
        return _field(reader, f"gemma3.{name}", default)

    if key("attn_logit_softcapping") is not None:
        raise LoaderError("Gemma attention logit soft-capping is not supported by our kernels")
    scaling = key("rope.scaling.type")
    if scaling not in (None, "none"):
        raise LoaderError(f"Gemma 3 RoPE scaling {scaling!r} is not supported (270M/1B have none)")
    hidden = int(key("embedding_length"))
    heads = int(key("attention.head_count"))
    head_dim = int(key("attention.key_length", hidden // heads))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    cap = key("final_logit_softcapping")
    return Gemma3Config(
        vocab_size=int(key("vocab_size", len(tokens) if tokens else 0)),
        hidden_size=hidden,
        intermediate_size=int(key("feed_forward_length")),
        num_layers=int(key("block_count")),
        num_heads=heads,
        num_kv_heads=int(key("attention.head_count_kv", heads)),
        head_dim=head_dim,
        rms_norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(key("rope.freq_base", 1_000_000.0)),
        max_position_embeddings=int(key("context_length", 32768)),
        tie_word_embeddings="output.weight" not in {t.name for t in reader.tensors},
        query_pre_attn_scalar=float(head_dim),
        sliding_window=int(key("attention.sliding_window", 512)),
        sliding_window_pattern=6,
        rope_local_theta=10000.0,
        final_logit_softcapping=float(cap) if cap else None,
    )


def read_gemma3_weights(reader) -> dict[str, torch.Tensor]:
    """All tensors dequantised to fp32 under the names ``Gemma3ForCausalLM.load_weights`` takes."""
    weights: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        name = tensor.name
        if name == "token_embd.weight":
            target = "embed_tokens.weight"
        elif name == "output_norm.weight":
            target = "norm.weight"
        elif name == "output.weight":
            target = "lm_head.weight"
        elif name.startswith("blk.") and name.split(".", 2)[2] in _LAYER_NAMES:
            _, index, rest = name.split(".", 2)
            target = f"layers.{index}.{_LAYER_NAMES[rest]}"
        else:
            raise LoaderError(f"unexpected tensor {name!r} in a Gemma 3 GGUF")
        weights[target] = dequantize(tensor.data, tensor.tensor_type.name, shape)
    return weights


def load_gemma3_gguf(
    path: str | Path, dtype: torch.dtype = torch.float32, with_tokenizer: bool = True
) -> LoadedModel:
    """The model, tokenizer and chat template of a Gemma 3 GGUF file."""
    path = Path(path)
    reader = open_gguf(path)
    config = read_gemma3_config(reader)
    model = Gemma3ForCausalLM(config)
    model.load_weights(read_gemma3_weights(reader))
    model.to(dtype)
    model.eval()
    loaded = text_side(reader, path, model, with_tokenizer)
    if loaded.chat_template is None:
        loaded.chat_template = GEMMA_CHAT_TEMPLATE
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    if END_OF_TURN in tokens:
        loaded.eos_token_ids.append(tokens.index(END_OF_TURN))
    return loaded
