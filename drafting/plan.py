"""The model's side of drafting: the JSON schema it must answer in, its prompt, and the checked plan.

The model never writes contract text. It answers a ``DraftPlan`` in JSON: optional
clauses to include (by name), parameter edits of template clauses (by clause name and
parameter index), and library clauses to add (by id) with parameter edits. The schema
enumerates exactly those names and ids, so under constrained decoding (our engine, or a
backend that honours ``response_format``) the model cannot even name anything else; the
answer is parsed and validated again here either way, and each value is checked by
``drafting.params`` when it is applied.
"""

from __future__ import annotations

import json
from typing import Any

from drafting.compose import DraftPlan, LibraryAddition, ParameterEdit
from drafting.errors import PlanRejected
from drafting.library import LibraryClause
from drafting.params import MAX_VALUE, Parameter, find_parameters

MAX_EDITS = 8
MAX_ADDITIONS = 3


def _edit_item(max_index: int, with_clause: list[str] | None) -> dict:
    properties: dict[str, Any] = {
        "parameter": {"type": "integer", "minimum": 0, "maximum": max(max_index, 0)},
        "value": {"type": "string", "minLength": 1, "maxLength": MAX_VALUE},
    }
    if with_clause is not None:
        properties = {"clause": {"enum": with_clause}, **properties}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _array(items: dict | None, max_items: int) -> dict:
    if items is None:  # nothing to choose from: only the empty list fits
        return {"type": "array", "items": {"type": "string"}, "maxItems": 0}
    return {"type": "array", "items": items, "maxItems": max_items}


def plan_schema(
    optional_clauses: list[str],
    clause_parameters: dict[str, list[Parameter]],
    library: list[LibraryClause],
) -> dict:
    """The JSON schema of a plan for this template and these library candidates."""
    editable = [name for name, params in clause_parameters.items() if params]
    most = max((len(clause_parameters[n]) for n in editable), default=0)
    library_most = max((len(find_parameters(0, c.text)) for c in library), default=0)
    addition = {
        "type": "object",
        "properties": {
            "clause_id": {"enum": [c.clause_id for c in library]},
            "edits": _array(_edit_item(library_most - 1, None), 4),
        },
        "required": ["clause_id", "edits"],
        "additionalProperties": False,
    }
    properties = {
        "include": _array(
            {"enum": optional_clauses} if optional_clauses else None, len(optional_clauses)
        ),
        "edits": _array(_edit_item(most - 1, editable) if editable else None, MAX_EDITS),
        "add": _array(addition if library else None, MAX_ADDITIONS),
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        # llguidance: no free whitespace between tokens. With it a small model can fill its
        # whole budget with newlines (seen with SmolLM2 at temperature 1); other engines
        # ignore unknown keywords.
        "x-guidance": {"whitespace_flexible": False},
    }


def response_format(schema: dict) -> dict:
    """OpenAI's ``response_format`` for ``schema`` (our engine enforces it token by token)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "draft_plan", "schema": schema, "strict": True},
    }


def plan_messages(
    clause_titles: dict[str, str],
    optional_clauses: list[str],
    clause_parameters: dict[str, list[Parameter]],
    library: list[LibraryClause],
    instructions: str,
) -> list[dict]:
    """System and user messages that show the model exactly what it may choose."""
    lines = ["Template clauses and their parameters (index: current value):"]
    for name, params in clause_parameters.items():
        if params:
            shown = "; ".join(f"{i}: {p.text!r}" for i, p in enumerate(params))
            lines.append(f"- {name} ({clause_titles.get(name, name)}): {shown}")
    if optional_clauses:
        lines.append("Optional clauses (left out unless included): " + ", ".join(optional_clauses))
    if library:
        lines.append("Approved clauses that may be added:")
        for clause in library:
            params = find_parameters(0, clause.text)
            shown = "; ".join(f"{i}: {p.text!r}" for i, p in enumerate(params)) or "none"
            lines.append(
                f"- {clause.clause_id} ({clause.heading}, from {clause.document_title}): "
                f"{clause.text[:300]} [parameters: {shown}]"
            )
    system = (
        "You prepare a contract draft from an approved template. You never write contract "
        "text. You may only: include optional clauses, change the listed parameters "
        "(durations, amounts, blanks) to short values of the same kind, and add listed "
        "approved clauses with changed parameters. Answer with one JSON object: "
        '{"include": [...], "edits": [{"clause", "parameter", "value"}], '
        '"add": [{"clause_id", "edits": [{"parameter", "value"}]}]}.'
    )
    user = "\n".join(lines) + f"\n\nInstructions: {instructions.strip()}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def extract_json(text: str) -> Any:
    """The JSON object in ``text``; tolerant of prose around it (models that ignore the schema)."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise PlanRejected(f"the model's answer holds no JSON object: {text[:200]!r}") from None
        try:
            return json.loads(text[start : end + 1])
        except json.JSONDecodeError as exc:
            raise PlanRejected(f"the model's answer is not valid JSON: {exc}") from None


def parse_plan(text: str, schema: dict, library: list[LibraryClause]) -> DraftPlan:
    """The plan in the model's answer, validated against ``schema``; ``PlanRejected`` otherwise."""
    import jsonschema

    answer = extract_json(text)
    try:
        jsonschema.validate(answer, schema)
    except jsonschema.ValidationError as exc:
        raise PlanRejected(f"the model's plan does not fit the schema: {exc.message}") from None
    by_id = {c.clause_id: c for c in library}
    return DraftPlan(
        include=list(dict.fromkeys(answer["include"])),
        edits=[ParameterEdit(e["clause"], e["parameter"], e["value"]) for e in answer["edits"]],
        additions=[
            LibraryAddition(
                by_id[a["clause_id"]], tuple((e["parameter"], e["value"]) for e in a["edits"])
            )
            for a in answer["add"]
        ],
    )
