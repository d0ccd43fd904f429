"""A tiny random llama GGUF with a byte-level tokenizer and a ChatML chat template.

For tests of the whole load path (GGUF reader, tokenizer, chat template, server) on a
model small enough to split in two (SmolLM2's 9 heads and 3 kv heads do not divide by 2)
and quick to load (260 tokens, one merge: the tokenizer builds in well under a second).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTERMEDIATE, LAYERS = 64, 4, 2, 16, 128, 2


SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokens() -> list[str]:
    """The 256 byte-level BPE symbols (GPT-2's printable stand-ins for the bytes)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> Path:
    """Write random weights of the shape above, the tokenizer and the template, to ``path``."""
    from gguf import GGUFWriter

    tokens = [*SPECIAL, *byte_tokens(), "Ġt"]
    vocab = len(tokens)
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIAL) + [1] * 257)  # 3: control, 1: normal
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHATML)
    rng = np.random.default_rng(seed)

    def tensor(*shape: int, scale: float = 0.5) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer.add_tensor("token_embd.weight", tensor(vocab, HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    for layer in range(LAYERS):
        p = f"blk.{layer}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(p + "attn_q.weight", tensor(HEADS * HEAD_DIM, HIDDEN))
        writer.add_tensor(p + "attn_k.weight", tensor(KV_HEADS * HEAD_DIM, HIDDEN))
        writer.add_tensor(p + "attn_v.weight", tensor(KV_HEADS * HEAD_DIM, HIDDEN))
        writer.add_tensor(p + "attn_output.weight", tensor(HIDDEN, HEADS * HEAD_DIM))
        writer.add_tensor(p + "ffn_gate.weight", tensor(INTERMEDIATE, HIDDEN))
        writer.add_tensor(p + "ffn_up.weight", tensor(INTERMEDIATE, HIDDEN))
        writer.add_tensor(p + "ffn_down.weight", tensor(HIDDEN, INTERMEDIATE))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
