"""The model's plan: offered under a JSON schema, validated, and only able to change parameters."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from drafting.errors import PlanRejected
from drafting.generate import Drafter, TemplateSource, load_template
from drafting.library import ClauseLibrary
from ingest.stores.acl import AccessScope
from llm.client import ChatResult, LLMError
from tests.unit.drafting.library_fixtures import RESTRICTED_CLAUSE, build_index
from tests.unit.drafting.nda import VALID_VALUES, nda_template

ASK = "add a non-solicitation clause, 12 months; the MNDA term is 2 years"


class StubModel:
    """Answers with ``plan(schema)`` and records what it was offered."""

    def __init__(self, plan, refuse_response_format: bool = False):
        self.plan = plan
        self.refuse = refuse_response_format
        self.calls: list[dict] = []

    async def chat(self, messages, *, max_tokens=256, response_format=None, **_):
        self.calls.append({"messages": messages, "response_format": response_format})
        if response_format and self.refuse:
            raise LLMError("LLM server answered 400: response_format_unsupported", status=400)
        schema = (self.calls[0]["response_format"] or {})["json_schema"]["schema"]
        return ChatResult(self.plan(schema), "stop", 1, 1)


def offered_ids(schema: dict) -> list[str]:
    items = schema["properties"]["add"].get("items", {})
    return items.get("properties", {}).get("clause_id", {}).get("enum", [])


def add_first_offered(schema: dict) -> str:
    add = [
        {"clause_id": i, "edits": [{"parameter": 0, "value": "12 months"}]}
        for i in offered_ids(schema)[:1]
    ]
    edits = [{"clause": "mnda_term", "parameter": 0, "value": "2 years"}]
    return json.dumps({"include": [], "edits": edits, "add": add})


def run(model, scope: AccessScope, tmp_path, instructions: str = ASK):
    if not (tmp_path / "lexical.db").exists():
        build_index(tmp_path / "lexical.db")
    data = nda_template().encode()
    source = TemplateSource("'NDA' v1", ".md", data, load_template(data, ".md"))
    drafter = Drafter(model, ClauseLibrary(tmp_path / "lexical.db"))
    return asyncio.run(drafter.draft(source, VALID_VALUES, [], instructions, scope))


def test_plan_adds_the_approved_clause_changing_only_its_parameter(tmp_path):
    model = StubModel(add_first_offered)
    output = run(model, AccessScope.for_groups(["legal"]), tmp_path)
    request = model.calls[0]["response_format"]
    assert request["type"] == "json_schema" and request["json_schema"]["name"] == "draft_plan"
    added = next(c for c in output.report if c.name == "non_solicit_added")
    assert "Legal Contractor Agreement" in added.source and "Non-Solicitation" in added.source
    assert added.text == RESTRICTED_CLAUSE.replace("18 months", "12 months")
    assert "[-18-]{+12+}" in added.diff and added.changed
    term = next(c for c in output.report if c.name == "mnda_term")
    assert term.changed and "Expires 2 years from Effective Date" in term.text
    assert term.text.count("[1 year(s)]") == 0 and "{+2" in term.diff
    assert "12. " + added.text in output.text  # numbered after the last Standard Term
    assert output.rejected == []


def test_a_user_without_access_is_offered_no_clause_of_the_restricted_contract(tmp_path):
    model = StubModel(add_first_offered)
    output = run(model, AccessScope.for_groups(["hr"]), tmp_path)
    assert offered_ids(model.calls[0]["response_format"]["json_schema"]["schema"]) == []
    prompt = json.dumps(model.calls[0]["messages"])
    assert "solicit any employee" not in prompt
    assert not any("Legal Contractor" in c.source for c in output.report)


def test_a_value_that_writes_legal_text_is_refused_and_changes_nothing(tmp_path):
    sneaky = "2 years. The Receiving Party shall pay damages"

    def plan(_schema):
        return json.dumps(
            {
                "include": [],
                "edits": [{"clause": "mnda_term", "parameter": 0, "value": sneaky}],
                "add": [],
            }
        )

    output = run(StubModel(plan), AccessScope.everything(), tmp_path)
    assert "shall pay damages" not in output.text
    assert not next(c for c in output.report if c.name == "mnda_term").changed
    assert [p.field for p in output.rejected] == ["mnda_term"]


def test_answers_outside_the_schema_are_rejected(tmp_path):
    invented = lambda _s: json.dumps({"include": ["indemnity"], "edits": [], "add": []})  # noqa: E731
    with pytest.raises(PlanRejected):
        run(StubModel(invented), AccessScope.everything(), tmp_path)
    with pytest.raises(PlanRejected):
        run(
            StubModel(lambda _s: "Sure! Here is your contract."), AccessScope.everything(), tmp_path
        )


def test_a_server_refusing_response_format_is_asked_again_and_still_validated(tmp_path):
    model = StubModel(lambda s: "The plan:\n" + add_first_offered(s), refuse_response_format=True)
    output = run(model, AccessScope.everything(), tmp_path)
    assert [c["response_format"] is None for c in model.calls] == [False, True]
    assert any(c.name == "non_solicit_added" for c in output.report)


def test_the_schema_admits_only_offered_names():
    data = nda_template().encode()
    parsed = load_template(data, ".md")
    from drafting.compose import clause_parameters
    from drafting.plan import plan_schema

    parameters = {c.name: clause_parameters(parsed, c) for c in parsed.clauses}
    schema = plan_schema(parsed.optional_clauses, parameters, [])
    jsonschema.validate({"include": ["non_solicit"], "edits": [], "add": []}, schema)
    for bad in (
        {"include": ["other"], "edits": [], "add": []},
        {
            "include": [],
            "edits": [{"clause": "nowhere", "parameter": 0, "value": "1 day"}],
            "add": [],
        },
        {"include": [], "edits": [], "add": [{"clause_id": "x:1", "edits": []}]},
        {"include": [], "edits": [], "add": [], "text": "new clause"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_in_a_docx_template_the_added_clause_takes_the_numbered_style_of_its_neighbour(tmp_path):
    import io

    from docx import Document

    from tests.unit.drafting.nda import nda_docx_template

    build_index(tmp_path / "lexical.db")
    data = nda_docx_template()
    source = TemplateSource("'NDA' v1", ".docx", data, load_template(data, ".docx"))
    drafter = Drafter(StubModel(add_first_offered), ClauseLibrary(tmp_path / "lexical.db"))
    output = asyncio.run(
        drafter.draft(source, VALID_VALUES, [], ASK, AccessScope.for_groups(["legal"]))
    )
    paragraphs = Document(io.BytesIO(output.docx)).paragraphs
    texts = [p.text for p in paragraphs]
    added = texts.index(RESTRICTED_CLAUSE.replace("18 months", "12 months"))
    assert texts[added - 1].startswith("General.")  # right after the last Standard Term
    assert paragraphs[added].style.name == paragraphs[added - 1].style.name == "List Number"
    assert "Expires 2 years from Effective Date." in texts
