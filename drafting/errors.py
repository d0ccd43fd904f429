"""The drafting package's errors; the gateway maps them to HTTP in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a template or a set of field values, named by the field it concerns."""

    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class DraftingError(Exception):
    """Base of every drafting error."""


class InvalidInput(DraftingError):
    """Input that cannot be drafted from; carries EVERY problem found, not just the first."""

    code = "invalid_fields"

    def __init__(self, message: str, problems: list[Problem]):
        super().__init__(message)
        self.message = message
        self.problems = list(problems)


class InvalidTemplate(InvalidInput):
    """A template with broken, conflicting or duplicate placeholders or clause markers."""

    code = "invalid_template"


class PlanRejected(DraftingError):
    """The model's answer was not a plan that fits the schema (it changes nothing)."""
