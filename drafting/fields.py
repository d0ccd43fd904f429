"""Typed template fields: parse a placeholder's declaration, check and render the values given.

Declarations (inside ``{{ }}``): ``name`` (text), ``name: text``, ``name: date``,
``name: int``, ``name: int[1..60]`` (inclusive range), ``name: choice[Delaware, New York]``.
Values are checked all at once so the caller gets every problem in one answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from drafting.errors import Problem

FIELD_TYPES = ("text", "date", "int", "choice")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_INT_RANGE = re.compile(r"^int\s*\[\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*\]$")
_CHOICE = re.compile(r"^choice\s*\[(.*)\]$", re.DOTALL)
MAX_TEXT = 500


@dataclass(frozen=True)
class FieldSpec:
    """What one placeholder accepts. ``required`` is False for fields used only in optional clauses."""

    name: str
    type: str = "text"
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    required: bool = True
    clauses: tuple[str, ...] = field(default=(), compare=False)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if self.type == "choice":
            body["choices"] = list(self.choices)
        if self.minimum is not None:
            body["min"] = self.minimum
        if self.maximum is not None:
            body["max"] = self.maximum
        return body

    def same_declaration(self, other: FieldSpec) -> bool:
        return (self.type, self.choices, self.minimum, self.maximum) == (
            other.type,
            other.choices,
            other.minimum,
            other.maximum,
        )


def parse_declaration(inner: str) -> tuple[FieldSpec | None, str | None, bool]:
    """``(spec, error, typed)`` for the text between ``{{`` and ``}}``.

    ``typed`` says whether the placeholder declared a type (a bare ``{{name}}`` may
    reuse a field declared elsewhere with a type).
    """
    name, sep, kind = (part.strip() for part in inner.partition(":"))
    if not NAME.match(name):
        return None, f"invalid field name {name!r} (letters, digits, underscore)", False
    if not sep:
        return FieldSpec(name), None, False
    if kind in ("text", "date", "int"):
        return FieldSpec(name, kind), None, True
    if match := _INT_RANGE.match(kind):
        low, high = int(match.group(1)), int(match.group(2))
        if low > high:
            return None, f"field {name}: empty range {low}..{high}", True
        return FieldSpec(name, "int", minimum=low, maximum=high), None, True
    if match := _CHOICE.match(kind):
        choices = tuple(c.strip() for c in match.group(1).split(","))
        if not all(choices):
            return None, f"field {name}: choice[...] needs non-empty options", True
        if len(set(choices)) != len(choices):
            return None, f"field {name}: choice[...] lists an option twice", True
        return FieldSpec(name, "choice", choices=choices), None, True
    return (
        None,
        f"field {name}: unknown type {kind!r} (text, date, int, int[a..b], choice[...])",
        True,
    )


def _check_one(spec: FieldSpec, value: Any) -> tuple[str | None, str | None]:
    """``(rendered, error)`` for one provided value."""
    if spec.type == "date":
        try:
            day = date.fromisoformat(str(value).strip())
        except ValueError:
            return None, f"{value!r} is not a date (use YYYY-MM-DD)"
        return f"{day.strftime('%B')} {day.day}, {day.year}", None
    if spec.type == "int":
        if isinstance(value, bool) or not re.fullmatch(r"\s*-?\d+\s*", str(value)):
            return None, f"{value!r} is not an integer"
        number = int(str(value))
        if spec.minimum is not None and number < spec.minimum:
            return None, f"{number} is below the minimum {spec.minimum}"
        if spec.maximum is not None and number > spec.maximum:
            return None, f"{number} is above the maximum {spec.maximum}"
        return str(number), None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None, "must be a string"
    text = str(value).strip()
    if spec.type == "choice":
        for choice in spec.choices:
            if choice.casefold() == text.casefold():
                return choice, None
        return None, f"{text!r} is not one of: {', '.join(spec.choices)}"
    if not text:
        return None, "must not be empty"
    if len(text) > MAX_TEXT:
        return None, f"longer than {MAX_TEXT} characters"
    return text, None


def check_values(
    specs: list[FieldSpec], values: dict[str, Any], included_clauses: set[str]
) -> tuple[dict[str, str], list[Problem]]:
    """Rendered values by field name, and every problem (missing, malformed, unknown fields).

    A field that occurs only in optional clauses is required when one of those clauses
    is included.
    """
    rendered: dict[str, str] = {}
    problems: list[Problem] = []
    by_name = {spec.name: spec for spec in specs}
    for name in values:
        if name not in by_name:
            problems.append(Problem(name, "this template has no such field"))
    for spec in specs:
        needed = spec.required or bool(set(spec.clauses) & included_clauses)
        value = values.get(spec.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if needed:
                problems.append(Problem(spec.name, f"required {spec.type} field is missing"))
            continue
        text, error = _check_one(spec, value)
        if error:
            problems.append(Problem(spec.name, error))
        elif text is not None:
            rendered[spec.name] = text
    return rendered, problems
