"""Load a llama-family GGUF file: metadata, dequantised weights, tokenizer and chat template.

The file is memory-mapped by ``gguf.GGUFReader``; quantised tensors (Q8_0, Q4_0, Q4_1 here,
any other type through ``gguf.quants``) are dequantised to fp32 once at load and then cast
to the engine's dtype. With ``native_4bit`` the Q4_0/Q4_1 projections are also kept as the
file stores them (``llm.kernels.q4_linear``) for the int4 decode kernel. llama.cpp's converter permutes the rows of Q and K so that its RoPE
can rotate adjacent pairs; we undo that exactly like transformers' GGUF loader does, so our
rotate-half RoPE (HF layout) sees the original weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from llm.kernels.q4_linear import Q4Blocks, int4_available, q4_from_gguf
from llm.kernels.q8_linear import Q8Blocks, q8_available, q8_from_gguf
from llm.loader.loaded import LoadedModel, LoaderError
from llm.models.llama import LlamaConfig, LlamaForCausalLM
from llm.parallel.context import ParallelContext
from llm.parallel.shard import shard_llama

QK = 32  # elements per block of the legacy quant types


def _halves(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """fp16 scale stored at byte ``start`` of every block, as an fp32 column."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """16 packed bytes -> 32 values: low nibbles are elements 0..15, high ones 16..31."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=1).float()


def dequantize(raw: np.ndarray, type_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Dequantise one GGUF tensor's raw data to an fp32 tensor of torch ``shape``."""
    data = torch.from_numpy(np.array(raw, copy=True)).reshape(-1)  # copy: the mmap is read-only
    if type_name == "F32":
        return data.view(torch.float32).reshape(shape).clone()
    if type_name == "F16":
        return data.view(torch.float16).float().reshape(shape)
    if type_name == "BF16":
        return data.view(torch.bfloat16).float().reshape(shape)
    if type_name == "Q8_0":
        blocks = data.view(torch.uint8).reshape(-1, 2 + QK)
        values = _halves(blocks, 0) * blocks[:, 2:].contiguous().view(torch.int8).float()
    elif type_name == "Q4_0":
        blocks = data.view(torch.uint8).reshape(-1, 2 + QK // 2)
        values = _halves(blocks, 0) * (_nibbles(blocks[:, 2:]) - 8.0)
    elif type_name == "Q4_1":
        blocks = data.view(torch.uint8).reshape(-1, 4 + QK // 2)
        values = _halves(blocks, 0) * _nibbles(blocks[:, 4:]) + _halves(blocks, 2)
    else:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize as gguf_dequantize

        return torch.from_numpy(
            gguf_dequantize(raw, GGMLQuantizationType[type_name]).copy()
        ).reshape(shape)
    return values.reshape(shape)


def reverse_rope_permute(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (per head: interleaved pairs -> two halves)."""
    rows = weight.shape[0]
    half = rows // num_heads // 2
    return (
        weight.reshape(num_heads, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)
    )


def rope_row_order(rows: int, num_heads: int) -> torch.Tensor:
    """Row index that ``reverse_rope_permute`` applies, for weights that are not plain tensors."""
    return reverse_rope_permute(torch.arange(rows)[:, None], num_heads).flatten()


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def read_config(reader) -> LlamaConfig:
    """Model hyper-parameters from the ``<arch>.*`` metadata keys."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise LoaderError(
            f"GGUF architecture {arch!r} is not supported (load_gguf reads 'llama'; "
            "llm.loader.load_model also reads 'gemma3')"
        )
    key = lambda name: f"{arch}.{name}"  # noqa: E731
    hidden = int(_field(reader, key("embedding_length")))
    heads = int(_field(reader, key("attention.head_count")))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = int(_field(reader, key("vocab_size"), len(tokens) if tokens else 0))
    names = {t.name for t in reader.tensors}
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(_field(reader, key("feed_forward_length"))),
        num_layers=int(_field(reader, key("block_count"))),
        num_heads=heads,
        num_kv_heads=int(_field(reader, key("attention.head_count_kv"), heads)),
        head_dim=int(_field(reader, key("rope.dimension_count"), hidden // heads)),
        rms_norm_eps=float(_field(reader, key("attention.layer_norm_rms_epsilon"), 1e-5)),
        rope_theta=float(_field(reader, key("rope.freq_base"), 10000.0)),
        max_position_embeddings=int(_field(reader, key("context_length"), 2048)),
        tie_word_embeddings="output.weight" not in names,
    )


# GGUF tensor name (after "blk.N.") -> our parameter name (after "layers.N.")
_LAYER_NAMES = {
    "attn_norm.weight": "input_norm.weight",
    "ffn_norm.weight": "post_attention_norm.weight",
    "attn_q.weight": "q_proj",
    "attn_k.weight": "k_proj",
    "attn_v.weight": "v_proj",
    "attn_output.weight": "o_proj.weight",
    "ffn_gate.weight": "gate_proj",
    "ffn_up.weight": "up_proj",
    "ffn_down.weight": "down_proj.weight",
}


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create modules' parameters in ``dtype`` (torch's process-wide default, restored)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def iter_weights(
    reader, config: LlamaConfig, dtype: torch.dtype = torch.float32
) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor dequantised to fp32, then cast to ``dtype``, under HF-style per-layer
    names (q/k un-permuted), one at a time: ``LlamaForCausalLM.load_weights`` copies each
    in as it comes, so the load never holds a second copy of the model (the whole fp32
    set of even a 135M model is 540 MB)."""
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        value = dequantize(tensor.data, tensor.tensor_type.name, shape).to(dtype)
        name = tensor.name
        if name == "token_embd.weight":
            yield "embed_tokens.weight", value
        elif name == "output_norm.weight":
            yield "norm.weight", value
        elif name == "output.weight":
            yield "lm_head.weight", value
        elif name.startswith("blk."):
            _, index, rest = name.split(".", 2)
            if rest not in _LAYER_NAMES:
                continue  # e.g. rope_freqs: not used by plain llama RoPE
            if rest == "attn_q.weight":
                value = reverse_rope_permute(value, config.num_heads)
            elif rest == "attn_k.weight":
                value = reverse_rope_permute(value, config.num_kv_heads)
            yield f"layers.{index}.{_LAYER_NAMES[rest]}", value


def read_q4_weights(reader, config: LlamaConfig) -> dict[str, Q4Blocks]:
    """The layers' Q4_0/Q4_1 projections as 4-bit blocks, named and un-permuted as in ``iter_weights``."""
    blocks: dict[str, Q4Blocks] = {}
    for tensor in reader.tensors:
        type_name = tensor.tensor_type.name
        if type_name not in ("Q4_0", "Q4_1") or not tensor.name.startswith("blk."):
            continue
        _, index, rest = tensor.name.split(".", 2)
        if rest not in _LAYER_NAMES:
            continue
        dims = [int(d) for d in reversed(tensor.shape.tolist())]
        if len(dims) != 2:
            raise LoaderError(f"GGUF tensor {tensor.name} should be 2-D [rows, cols], got {dims}")
        shape = (dims[0], dims[1])
        value = q4_from_gguf(
            torch.from_numpy(np.array(tensor.data, copy=True)).reshape(-1), type_name, shape
        )
        if rest == "attn_q.weight":
            value = value.permute_rows(rope_row_order(shape[0], config.num_heads))
        elif rest == "attn_k.weight":
            value = value.permute_rows(rope_row_order(shape[0], config.num_kv_heads))
        blocks[f"layers.{index}.{_LAYER_NAMES[rest]}"] = value
    return blocks


def read_q8_head(reader, config: LlamaConfig) -> Q8Blocks | None:
    """The LM head as Q8_0 blocks when the file stores it so (``output.weight``, or the
    token embedding when they are tied); None otherwise."""
    wanted = "token_embd.weight" if config.tie_word_embeddings else "output.weight"
    for tensor in reader.tensors:
        if tensor.name == wanted and tensor.tensor_type.name == "Q8_0":
            dims = [int(d) for d in reversed(tensor.shape.tolist())]
            raw = torch.from_numpy(np.array(tensor.data, copy=True)).reshape(-1)
            return q8_from_gguf(raw, (dims[0], dims[1]))
    return None


def load_tokenizer(path: Path):
    """HF fast tokenizer built from the file's ``tokenizer.ggml.*`` metadata (no download)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def open_gguf(path: Path):
    """A ``GGUFReader`` over ``path`` (memory-mapped), or a ``LoaderError`` that says why not."""
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError/struct errors on junk
        raise LoaderError(f"{str(path)!r} is not a readable GGUF file: {exc}") from exc


def gguf_architecture(path: Path) -> str | None:
    """The file's ``general.architecture`` (``llama``, ``gemma3``, ...)."""
    return _field(open_gguf(path), "general.architecture")


def load_gguf(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    with_tokenizer: bool = True,
    native_4bit: bool = False,
    parallel: ParallelContext | None = None,
) -> LoadedModel:
    """Read a llama-family GGUF into a ``LlamaForCausalLM`` with its tokenizer and template.

    ``native_4bit`` also keeps the file's 4-bit projections for the int4 kernel, which the
    model then uses for small batches (decode); off, every matmul uses the dequantised
    weights (the numerics the HF-identical tests pin). A no-op where torch lacks the kernel.
    ``parallel`` keeps only this rank's shard of a tensor-parallel split (the file is read
    whole, then cut before the dtype cast, and the full tensors are dropped); it turns
    ``native_4bit`` off (those blocks are of the whole weight).
    """
    path = Path(path)
    reader = open_gguf(path)
    config = read_config(reader)
    with default_dtype(dtype):  # no fp32 copy of the model on the way to bf16
        model = LlamaForCausalLM(config)
    model.load_weights(iter_weights(reader, config, dtype))
    if parallel is not None and parallel.world_size > 1:
        shard_llama(model, parallel)
        native_4bit = False
    model.to(dtype)
    model.eval()
    if native_4bit and int4_available():
        model.attach_4bit(read_q4_weights(reader, config))
    if native_4bit and q8_available():
        head = read_q8_head(reader, config)
        if head is not None:
            model.attach_q8_head(head)
    return text_side(reader, path, model, with_tokenizer)


def text_side(reader, path: Path, model, with_tokenizer: bool) -> LoadedModel:
    """``model`` with the file's tokenizer, chat template, EOS id and BOS/EOS strings."""
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    eos_ids = [int(eos)] if eos is not None else []
    special = {}
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    if bos is not None and int(bos) < len(tokens):
        special["bos_token"] = tokens[int(bos)]
    if eos is not None and int(eos) < len(tokens):
        special["eos_token"] = tokens[int(eos)]
    tokenizer = load_tokenizer(path) if with_tokenizer else None
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        chat_template=_field(reader, "tokenizer.chat_template"),
        model_name=path.stem,
        eos_token_ids=eos_ids,
        special_tokens=special,
    )
