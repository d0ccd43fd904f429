"""Constrained decoding masks: what the grammar forbids is -inf, a finished document allows only EOS,
and schemas or tokenizers it cannot handle are refused with a reason."""

from __future__ import annotations

import json

import pytest
import torch

from llm.engine.guided import GuidedDecodingUnavailable, JsonSchemaCompiler
from llm.engine.sampling_params import SamplingParams

pytest.importorskip(
    "llguidance", reason="constrained decoding needs llguidance (a project dependency)"
)

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer():
    from llm.loader.gguf import load_tokenizer
    from llm.loader.packaged import PackagedModelMissing, smollm2_gguf_path

    try:
        return load_tokenizer(smollm2_gguf_path())
    except PackagedModelMissing as exc:
        pytest.skip(str(exc))


def allowed_tokens(matcher, vocab: int) -> set[int]:
    logits = torch.zeros(vocab + 3)  # a model row may be wider than the tokenizer's vocabulary
    matcher.mask_(logits)
    assert torch.isinf(logits[vocab:]).all()
    return set(torch.nonzero(~torch.isinf(logits)).flatten().tolist())


def test_mask_follows_the_grammar_until_only_eos_is_left(tokenizer):
    eos = tokenizer.eos_token_id
    matcher = JsonSchemaCompiler(tokenizer, [eos]).matcher(SCHEMA)
    vocab = len(tokenizer)
    first = allowed_tokens(matcher, vocab)
    assert first and all(tokenizer.decode([t]).lstrip().startswith("{") for t in first)
    assert eos not in first and not matcher.complete
    for token in tokenizer.encode('{"name": "Ada", "age": 36}', add_special_tokens=False):
        assert token in allowed_tokens(matcher, vocab)
        matcher.accept(token)
    assert matcher.complete and allowed_tokens(matcher, vocab) == {eos}


def test_a_token_the_mask_forbids_is_rejected(tokenizer):
    matcher = JsonSchemaCompiler(tokenizer, [tokenizer.eos_token_id]).matcher(SCHEMA)
    with pytest.raises(RuntimeError, match="grammar rejected"):
        matcher.accept(tokenizer.encode("Hello", add_special_tokens=False)[0])


def test_bad_schemas_and_tokenizers_are_refused_with_a_reason(tokenizer):
    compiler = JsonSchemaCompiler(tokenizer, [tokenizer.eos_token_id])
    with pytest.raises(GuidedDecodingUnavailable, match="invalid json schema"):
        compiler.matcher({"type": "nonsense"})
    with pytest.raises(GuidedDecodingUnavailable, match="harmony"):
        JsonSchemaCompiler(object(), [0]).matcher(SCHEMA)
    with pytest.raises(ValueError, match="json_schema must be a JSON object"):
        SamplingParams(json_schema=json.dumps(SCHEMA))
