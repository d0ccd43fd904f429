"""Every problem of a template or of draft values is reported at once, and nothing is drafted."""

from __future__ import annotations

import asyncio

import pytest

from drafting.errors import InvalidInput, InvalidTemplate
from drafting.generate import Drafter, TemplateSource, check_request
from drafting.markdown_io import markdown_blocks
from drafting.template import parse_template
from ingest.stores.acl import AccessScope

TEMPLATE = """# Services Agreement
This agreement between {{party_a}} and {{party_b}} starts on {{effective_date: date}}.
1. **Term**. It runs for {{term_months: int[1..36]}} months.
2. **Law**. The laws of {{governing_law: choice[Delaware, New York]}} govern it.
{% clause non_solicit %}
3. **Non-Solicitation**. For {{non_solicit_months: int}} months neither party solicits employees of {{party_a}}.
{% end %}
"""


def parsed(text: str = TEMPLATE):
    return parse_template(markdown_blocks(text))


def problems_of(excinfo) -> dict[str, str]:
    return {p.field: p.message for p in excinfo.value.problems}


def test_field_schema_is_derived_with_types_choices_ranges_and_optional_clause_fields():
    fields = {f.name: f.as_json() for f in parsed().fields}
    assert list(fields) == [
        "party_a",
        "party_b",
        "effective_date",
        "term_months",
        "governing_law",
        "non_solicit_months",
    ]
    assert fields["effective_date"]["type"] == "date"
    assert fields["term_months"] == {
        "name": "term_months",
        "type": "int",
        "required": True,
        "min": 1,
        "max": 36,
    }
    assert fields["governing_law"]["choices"] == ["Delaware", "New York"]
    assert fields["non_solicit_months"]["required"] is False  # only inside the optional clause
    assert parsed().optional_clauses == ["non_solicit"]


def test_every_value_problem_is_listed_together():
    with pytest.raises(InvalidInput) as excinfo:
        check_request(
            parsed(),
            {
                "party_a": "Acme",
                "effective_date": "31/02/2026",
                "term_months": 48,
                "governing_law": "Texas",
                "colour": "blue",
            },
            ["non_solicit", "no_such_clause"],
        )
    problems = problems_of(excinfo)
    assert set(problems) == {
        "party_b",
        "effective_date",
        "term_months",
        "governing_law",
        "colour",
        "no_such_clause",
        "non_solicit_months",  # required once its clause is included
    }
    assert "missing" in problems["party_b"]
    assert "not a date" in problems["effective_date"]
    assert "maximum 36" in problems["term_months"]
    assert "Delaware" in problems["governing_law"]


def test_integers_reject_text_and_booleans():
    with pytest.raises(InvalidInput) as excinfo:
        check_request(
            parsed(),
            {
                "party_a": "A",
                "party_b": "B",
                "effective_date": "2026-01-01",
                "term_months": "twelve",
                "governing_law": "delaware",
            },
            [],
        )
    assert set(problems_of(excinfo)) == {"term_months"}
    values = {
        "party_a": "A",
        "party_b": "B",
        "effective_date": "2026-01-01",
        "term_months": "12",
        "governing_law": "new york",
    }
    rendered = check_request(parsed(), values, [])
    assert (
        rendered["governing_law"] == "New York" and rendered["effective_date"] == "January 1, 2026"
    )


def test_invalid_values_generate_nothing():
    source = TemplateSource("t v1", ".md", TEMPLATE.encode(), parsed())

    class NoModel:
        async def chat(self, *args, **kwargs):
            raise AssertionError("the model must not be asked about invalid input")

    drafter = Drafter(NoModel(), None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        asyncio.run(
            drafter.draft(source, {"party_a": "A"}, [], "add a clause", AccessScope.everything())
        )


BROKEN = """# Broken
Between {{party_a}} and {{ party b }}.
Starts on {{start: date}} and again {{start: date}}.
Kind {{kind: colour}}, law {{law: choice[]}}, range {{n: int[5..1]}}.
Unclosed {{party_a here.
Stray }} braces.
{% clause first %}
{% clause nested %}
{% end %}
{% end %}
{% weird %}
{% clause last %}
Never closed.
"""


def test_a_broken_template_lists_every_problem():
    with pytest.raises(InvalidTemplate) as excinfo:
        parsed(BROKEN)
    messages = [f"{p.field}: {p.message}" for p in excinfo.value.problems]
    text = "\n".join(messages)
    assert "invalid field name 'party b'" in text
    assert "duplicate placeholder" in text and text.count("duplicate placeholder") == 1
    assert "unknown type 'colour'" in text
    assert "choice[...] needs non-empty options" in text
    assert "empty range 5..1" in text
    assert text.count("unbalanced") == 2
    assert "cannot nest" in text
    assert "end without clause" in text
    assert "must stand alone" in text
    assert "never closed" in text


def test_a_reused_bare_placeholder_is_not_a_duplicate():
    fields = parsed("{{name}} and {{name}} and {{when: date}} then {{when}}").fields
    assert [(f.name, f.type) for f in fields] == [("name", "text"), ("when", "date")]
