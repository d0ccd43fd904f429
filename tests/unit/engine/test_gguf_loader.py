"""GGUF pieces: our dequantisation equals gguf's, the Q/K un-permute equals transformers'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm.loader import LoaderError, load_model
from llm.loader.gguf import dequantize, reverse_rope_permute


@pytest.mark.parametrize("type_name", ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"])
def test_dequantize_matches_gguf_reference(type_name):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize
    from gguf.quants import quantize

    rng = np.random.default_rng(0)
    values = (rng.standard_normal((6, 128)) * 3).astype(np.float32)
    qtype = GGMLQuantizationType[type_name]
    raw = quantize(values, qtype)
    ours = dequantize(raw, type_name, (6, 128))
    reference = torch.from_numpy(np.asarray(gguf_dequantize(raw, qtype), dtype=np.float32)).reshape(
        6, 128
    )
    assert torch.equal(ours, reference)
    if type_name.startswith("Q"):
        assert not torch.equal(ours, torch.from_numpy(values))  # it really was lossy


@pytest.mark.parametrize("num_heads", [3, 9])
def test_rope_unpermute_matches_transformers(num_heads):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    weight = np.arange(num_heads * 64 * 5, dtype=np.float32).reshape(num_heads * 64, 5)
    expected = LlamaTensorProcessor()._reverse_permute_weights(weight, num_heads, num_heads)
    assert torch.equal(
        reverse_rope_permute(torch.from_numpy(weight), num_heads), torch.from_numpy(expected)
    )


def test_load_model_errors_are_clear(tmp_path):
    with pytest.raises(LoaderError, match="does not exist"):
        load_model(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(LoaderError, match="not a readable GGUF"):
        load_model(junk)
    with pytest.raises(LoaderError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(LoaderError, match="'bert'"):
        load_model(tmp_path)


def test_a_bf16_load_equals_the_fp32_load_rounded_and_leaves_the_default_dtype(tmp_path):
    """Loading in bf16 builds the model in bf16 and casts each tensor as it is read (no
    fp32 copy of the whole model): the result is the fp32 load rounded, and torch's default
    dtype is float32 again afterwards."""
    from llm.loader.gguf import load_gguf
    from tests.unit.engine.tiny_gguf import write_tiny_llama_gguf

    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    fp32 = load_gguf(path, torch.float32, with_tokenizer=False).model
    bf16 = load_gguf(path, torch.bfloat16, with_tokenizer=False).model
    assert torch.get_default_dtype() == torch.float32
    fp32_params = dict(fp32.named_parameters())
    for name, param in bf16.named_parameters():
        assert param.dtype == torch.bfloat16
        assert torch.equal(param, fp32_params[name].bfloat16()), name
