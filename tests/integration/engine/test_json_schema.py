"""Constrained decoding on the real model: JSON that fits the schema, in a batch beside free text."""

from __future__ import annotations

import json

import pytest

from llm.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.slow
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip(
    "llguidance", reason="constrained decoding needs llguidance (a project dependency)"
)

ITEMS = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "string", "maxLength": 16},
            "minItems": 2,
            "maxItems": 3,
        },
        "urgent": {"type": "boolean"},
    },
    "required": ["items", "urgent"],
    "additionalProperties": False,
}


def test_schema_output_parses_while_free_requests_in_the_batch_are_unchanged(make_engine, smollm2):
    tokenizer = smollm2.tokenizer
    ask = tokenizer.apply_chat_template(
        [{"role": "user", "content": "List things to pack for a business trip."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    prompt = tokenizer.encode(ask, add_special_tokens=False)
    engine = make_engine()
    free = SamplingParams(max_tokens=24, temperature=0.0)
    alone = engine.generate([prompt], free)[0]
    guided = [
        SamplingParams(max_tokens=80, temperature=0.0, json_schema=ITEMS),
        SamplingParams(max_tokens=80, temperature=1.0, seed=11, json_schema=ITEMS),
    ]
    results = engine.generate([prompt, prompt, prompt], [free, *guided])
    assert results[0].token_ids == alone.token_ids  # masks are per request
    with pytest.raises(json.JSONDecodeError):
        json.loads(alone.text)  # unconstrained, the model writes prose
    for result in results[1:]:
        assert result.finish_reason == "stop", result.text
        jsonschema.validate(json.loads(result.text), ITEMS)
