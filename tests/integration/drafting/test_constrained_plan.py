"""Property: our engine's schema-constrained output is valid JSON that fits the drafting plan schema.

Hypothesis draws the schema (templates with different optional clauses and parameters,
library candidates) and the sampling seed; SmolLM2 from the packaged GGUF decodes under
llguidance's token masks. Bounded on purpose: few examples, few tokens.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from drafting.library import LibraryClause
from drafting.params import find_parameters
from drafting.plan import parse_plan, plan_messages, plan_schema
from llm.engine.sampling_params import SamplingParams

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("llguidance", reason="constrained decoding needs llguidance")

NAMES = ["non_solicit", "audit_rights", "exclusivity", "publicity", "insurance"]
PARAMETER_TEXTS = ["12 months", "30 days", "two (2) years", "[Fill in state]", "$5,000", "10%"]
LIBRARY_TEXTS = [
    "Non-Solicitation. For 18 months neither party solicits the other's employees.",
    "Audit. Customer may audit Provider once every 12 months on 30 days notice.",
]


@st.composite
def plan_inputs(draw):
    optional = draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True))
    clause_parameters = {}
    for index in range(draw(st.integers(1, 3))):
        texts = draw(st.lists(st.sampled_from(PARAMETER_TEXTS), max_size=2))
        sentence = " and ".join(texts) or "no parameters here"
        clause_parameters[f"clause_{index}"] = find_parameters(0, sentence)
    library = [
        LibraryClause(
            f"doc{i}:{i}", f"doc{i}", f"Agreement {i}", None, text.split(".")[0], None, text
        )
        for i, text in enumerate(
            draw(st.lists(st.sampled_from(LIBRARY_TEXTS), max_size=2, unique=True))
        )
    ]
    instructions = draw(
        st.sampled_from(
            ["add a non-solicitation clause, 12 months", "make the term 2 years", "no changes"]
        )
    )
    return optional, clause_parameters, library, instructions


def test_constrained_plans_always_parse_and_fit_their_schema(make_engine, smollm2):
    engine = make_engine()
    tokenizer = smollm2.tokenizer

    @settings(
        max_examples=4,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # shrinking would re-run the model for minutes
    )
    @given(
        inputs=plan_inputs(),
        seed=st.integers(0, 2**31 - 1),
        temperature=st.sampled_from([0.0, 1.0]),
    )
    def check(inputs, seed, temperature):
        optional, clause_parameters, library, instructions = inputs
        schema = plan_schema(optional, clause_parameters, library)
        messages = plan_messages({}, optional, clause_parameters, library, instructions)
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        params = SamplingParams(
            max_tokens=300, temperature=temperature, seed=seed, json_schema=schema
        )
        result = engine.generate([ids], params)[0]
        assert result.finish_reason == "stop", result.text
        answer = json.loads(result.text)
        jsonschema.validate(answer, schema)
        parse_plan(result.text, schema, library)  # the drafter accepts it as a plan

    check()
