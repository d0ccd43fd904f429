"""Gemma 3 in our engine against transformers' ``Gemma3ForCausalLM``, on a tiny random model.

The HF model's weights are written as a GGUF the way llama.cpp's converter writes Gemma 3
(its tensor names, RMSNorm weights stored as 1 + w, no Q/K permutation) and read back by
our loader, so the test covers the file mapping and every architectural difference from
llama: scaled embedding, (1 + w) norms, q/k norm, pre+post norms, GeGLU, and local
(sliding-window, own RoPE base) vs global layers. The window is shorter than the prompts,
so a wrong window or RoPE base on either kind of layer changes the logits.
"""

from __future__ import annotations

import pytest
import torch

from llm.engine.config import EngineConfig
from llm.engine.llm_engine import LLMEngine
from llm.engine.sampling_params import SamplingParams
from llm.loader import LoaderError
from llm.loader.gguf_gemma3 import GEMMA_CHAT_TEMPLATE, load_gemma3_gguf
from tests.unit.engine.prefill_helpers import prefill_once

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

WINDOW = 6
LAYERS = 6  # layers 0-4 local, layer 5 global


def _hf_tiny():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=WINDOW,
        max_position_embeddings=256,
        rope_theta=1_000_000.0,
        rope_local_base_freq=10_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(-0.5, 0.5)  # (1 + w) must not be a no-op
            else:
                param.normal_(0.0, 0.3)
    return model.eval()


_HF_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _write_gguf(model, path, softcap_attention: bool = False) -> None:
    """The HF model as llama.cpp's converter writes Gemma 3 (F32 tensors)."""
    c = model.config
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(WINDOW)
    if softcap_attention:
        writer.add_float32("gemma3.attn_logit_softcapping", 50.0)
    writer.add_token_list([f"t{i}" for i in range(c.vocab_size)])
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    for name, value in model.model.state_dict().items():
        value = value.float()
        if name == "embed_tokens.weight":
            gguf_name = "token_embd.weight"
        elif name == "norm.weight":
            gguf_name, value = "output_norm.weight", value + 1
        else:
            _, index, rest = name.split(".", 2)
            gguf_name = f"blk.{index}.{_HF_TO_GGUF[rest]}"
            if "norm" in rest:
                value = value + 1
        writer.add_tensor(gguf_name, value.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    hf = _hf_tiny()
    path = tmp_path_factory.mktemp("gemma3") / "tiny-gemma3.gguf"
    _write_gguf(hf, path)
    return hf, load_gemma3_gguf(path, torch.float32, with_tokenizer=False)


def _prompt_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits of every prompt position, the prompt prefilled in one step (block size 4)."""
    return prefill_once(model, ids, list(range(len(ids))), block_size=4)[0]


def test_logits_match_transformers(tiny):
    hf, ours = tiny
    assert [layer.sliding for layer in ours.model.layers] == [True] * 5 + [False]
    ids = torch.randint(3, 300, (20,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.inference_mode():
        reference = hf(torch.tensor([ids])).logits[0].float()
    logits = _prompt_logits(ours.model, ids)
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)


def test_greedy_decode_matches_transformers(tiny):
    """Decode through the engine's paged cache, past the window: HF's greedy tokens."""
    hf, ours = tiny
    engine = LLMEngine(
        ours.model,
        EngineConfig(num_kv_blocks=32, block_size=4, max_model_len=64),
        eos_token_ids=[],
    )
    prompts = [[5, 17, 42, 8, 99, 7, 3, 250], [11, 12, 13]]
    for prompt in prompts:
        with torch.inference_mode():
            expected = hf.generate(
                torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0
            )[0, len(prompt) :].tolist()
        ours_tokens = engine.generate([prompt], SamplingParams(max_tokens=12, temperature=0.0))
        assert ours_tokens[0].token_ids == expected


def test_chat_template_fallback_and_end_of_turn_stop(tiny):
    """A file without a template (pretrained checkpoint) gets Gemma's turn format."""
    from llm.chat.chatml import render_chat

    _, ours = tiny
    assert ours.chat_template == GEMMA_CHAT_TEMPLATE
    text = render_chat(
        GEMMA_CHAT_TEMPLATE,
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
        ],
        bos_token="<bos>",
    )
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_load_model_dispatches_gemma3_files(tiny, tmp_path, monkeypatch):
    """``llm.loader.load_model`` (what the server calls) picks the Gemma 3 loader by metadata."""
    from llm.loader import gguf_gemma3, load_model

    path = tmp_path / "tiny.gguf"
    _write_gguf(tiny[0], path)
    calls = []
    monkeypatch.setattr(
        gguf_gemma3, "load_gemma3_gguf", lambda p, dtype, with_tokenizer: calls.append(p) or "ok"
    )
    assert load_model(path, torch.float32) == "ok"
    assert calls == [path]


def test_attention_softcap_is_refused_with_a_reason(tmp_path):
    path = tmp_path / "softcap.gguf"
    _write_gguf(_hf_tiny(), path, softcap_attention=True)
    with pytest.raises(LoaderError, match="soft-capping"):
        load_gemma3_gguf(path, torch.float32, with_tokenizer=False)
