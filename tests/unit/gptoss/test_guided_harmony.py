"""response_format on harmony models: only the final channel is constrained to the schema."""

from __future__ import annotations

import json

import pytest
import torch

from llm.chat.tokenizer_assets import TokenizerAssetMissing, tiktoken_dir
from tests.unit.gptoss.factory import build_reference, write_checkpoint

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
REAL_VOCAB, RETURN = 201088, 200002
QUESTION = [{"role": "user", "content": "Who are you? Answer as JSON."}]


@pytest.fixture(scope="module")
def chat():
    try:
        tiktoken_dir()
    except TokenizerAssetMissing as exc:
        pytest.fail(f"the o200k vocabulary must be installed by scripts/fetch_assets.py: {exc}")
    from llm.chat.harmony import HarmonyChat

    return HarmonyChat()


def special(text: str) -> list[int]:
    from llm.chat.tokenizer_assets import tiktoken_harmony_encoding

    return tiktoken_harmony_encoding().encode(text, allowed_special="all")


def allowed(matcher, token_ids: list[int]) -> list[bool]:
    row = torch.zeros(REAL_VOCAB)
    matcher.mask_(row)
    return [bool(torch.isfinite(row[t])) for t in token_ids]


def test_analysis_is_free_and_the_final_channel_is_constrained(chat):
    from llm.engine.guided import JsonSchemaCompiler

    matcher = JsonSchemaCompiler(chat, [RETURN]).matcher(SCHEMA, chat.render_prompt(QUESTION))
    answer = chat.encode('{"name":"Al","age":3}')
    hello, brace = chat.encode("Hello")[0], answer[0]
    assert not matcher.constraining and allowed(matcher, [hello, brace]) == [True, True]
    for token in special("<|channel|>analysis<|message|>") + chat.encode("Let me think."):
        matcher.accept(token)
    assert not matcher.constraining and allowed(matcher, [hello]) == [True]
    for token in special("<|end|><|start|>assistant<|channel|>final<|message|>"):
        matcher.accept(token)
    assert matcher.constraining and allowed(matcher, [hello, brace]) == [False, True]
    for token in answer:
        assert allowed(matcher, [token]) == [True]
        matcher.accept(token)
    assert matcher.complete and allowed(matcher, [RETURN, brace, hello]) == [True, False, False]


def test_engine_answers_json_in_the_final_channel(chat, tmp_path):
    from llm.engine.config import EngineConfig
    from llm.engine.llm_engine import LLMEngine
    from llm.engine.sampling_params import SamplingParams

    torch.manual_seed(0)
    reference = build_reference(
        seed=6, num_hidden_layers=2, vocab_size=REAL_VOCAB, eos_token_id=RETURN
    )
    folder = write_checkpoint(reference, tmp_path / "harmony_json")
    engine = LLMEngine.from_model_path(
        folder, EngineConfig(dtype=torch.float32, num_kv_blocks=64, max_model_len=256)
    )
    prompt = chat.render_prompt(QUESTION) + special("<|channel|>final<|message|>")
    params = SamplingParams(max_tokens=40, temperature=0.8, seed=3, json_schema=SCHEMA)
    [output] = engine.generate([prompt], params)
    assert output.finish_reason == "stop" and output.token_ids[-1] == RETURN
    answer = json.loads(chat.decode(output.token_ids[:-1]))
    assert set(answer) == {"name", "age"} and 0 <= answer["age"] <= 99
