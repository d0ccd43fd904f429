"""Apply field values and a checked plan to a parsed template: output blocks plus the clause report.

Pure and deterministic: the same template, values and plan give the same draft. Every
change is a span edit of a template block (a placeholder filled, a parameter changed) or
a whole approved clause from the library inserted after a clause; nothing else can alter
the text, so a clause with no edit comes out byte-identical to the template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from drafting.diff import word_diff
from drafting.errors import Problem
from drafting.library import LibraryClause
from drafting.params import Parameter, check_value, find_parameters
from drafting.template import Block, Clause, ParsedTemplate, slug

Span = tuple[int, int, str]
_ITEM_NUMBER = re.compile(r"^(\s*)(\d+)\.\s")


@dataclass(frozen=True)
class ParameterEdit:
    """Change parameter ``parameter`` (index in the clause's parameter list) to ``value``."""

    clause: str
    parameter: int
    value: str


@dataclass(frozen=True)
class LibraryAddition:
    """Insert an approved clause, with ``(parameter index, value)`` edits of its parameters."""

    clause: LibraryClause
    edits: tuple[tuple[int, str], ...] = ()


@dataclass
class DraftPlan:
    """What the draft does beyond filling fields; built from the request and the model's answer."""

    include: list[str] = field(default_factory=list)
    edits: list[ParameterEdit] = field(default_factory=list)
    additions: list[LibraryAddition] = field(default_factory=list)


@dataclass
class ClauseReport:
    name: str
    source: str
    changed: bool
    diff: str
    text: str

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "changed": self.changed,
            "diff": self.diff,
        }


@dataclass
class ComposedDraft:
    blocks: list[Block]
    block_spans: dict[int, list[Span]]
    dropped: set[int]
    inserted: dict[int, list[str]]
    report: list[ClauseReport]
    rejected: list[Problem]


def apply_spans(text: str, spans: list[Span]) -> str:
    for start, end, replacement in sorted(spans, key=lambda s: s[0], reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def clause_parameters(parsed: ParsedTemplate, clause: Clause) -> list[Parameter]:
    """The clause's parameters in reading order (placeholders are fields, never parameters)."""
    found: list[Parameter] = []
    for index in clause.blocks:
        protected = [(p.start, p.end) for p in parsed.placeholders if p.block == index]
        found += find_parameters(index, parsed.blocks[index].text, protected)
    return found


def _edit_parameters(
    parameters: list[Parameter], edits: list[tuple[int, str]], where: str, rejected: list[Problem]
) -> list[tuple[Parameter, str]]:
    accepted: dict[int, tuple[Parameter, str]] = {}
    for index, value in edits:
        if not 0 <= index < len(parameters):
            rejected.append(Problem(where, f"no parameter {index}"))
        elif index in accepted:
            rejected.append(Problem(where, f"parameter {index} changed twice"))
        elif error := check_value(parameters[index], value):
            rejected.append(Problem(where, error))
        else:
            accepted[index] = (parameters[index], value.strip())
    return list(accepted.values())


def _adapt_library_clause(addition: LibraryAddition, rejected: list[Problem]) -> str:
    text = addition.clause.text
    parameters = find_parameters(0, text)
    accepted = _edit_parameters(
        parameters, list(addition.edits), addition.clause.clause_id, rejected
    )
    return apply_spans(text, [(p.start, p.end, value) for p, value in accepted])


def _insertion_point(parsed: ParsedTemplate, dropped: set[int]) -> int:
    """Added clauses go after the last kept numbered clause (else after the last kept block)."""
    kept = [c for c in parsed.clauses if c.blocks[0] not in dropped]
    numbered = [c for c in kept if parsed.blocks[c.blocks[0]].kind == "item"]
    target = (numbered or kept or parsed.clauses)[-1]
    body = [i for i in target.blocks if parsed.blocks[i].kind != "blank"] or target.blocks
    return body[-1]


def compose(
    parsed: ParsedTemplate, values: dict[str, str], plan: DraftPlan, template_label: str
) -> ComposedDraft:
    """The draft of ``parsed`` for checked ``values`` and ``plan`` (names already validated)."""
    rejected: list[Problem] = []
    included = set(plan.include)
    dropped = set(parsed.markers)
    for clause in parsed.clauses:
        if clause.optional and clause.name not in included:
            dropped.update(clause.blocks)
    spans: dict[int, list[Span]] = {}
    for placeholder in parsed.placeholders:
        if placeholder.block not in dropped:
            spans.setdefault(placeholder.block, []).append(
                (placeholder.start, placeholder.end, values[placeholder.name])
            )
    edits_by_clause: dict[str, list[tuple[int, str]]] = {}
    for edit in plan.edits:
        edits_by_clause.setdefault(edit.clause, []).append((edit.parameter, edit.value))
    for name, edits in edits_by_clause.items():
        target = parsed.clause(name)
        if target is None or target.blocks[0] in dropped:
            rejected.append(Problem(name, "no such clause in this draft"))
            continue
        for parameter, value in _edit_parameters(
            clause_parameters(parsed, target), edits, name, rejected
        ):
            spans.setdefault(parameter.block, []).append((parameter.start, parameter.end, value))

    report: list[ClauseReport] = []
    for clause in parsed.clauses:
        if clause.blocks[0] in dropped:
            continue
        before = parsed.clause_text(clause)
        after = "\n".join(
            apply_spans(parsed.blocks[i].text, spans.get(i, [])) for i in clause.blocks
        )
        report.append(
            ClauseReport(
                clause.name,
                f"template {template_label}, section {clause.title!r}",
                after != before,
                word_diff(before, after),
                after,
            )
        )

    inserted: dict[int, list[str]] = {}
    if plan.additions and not parsed.clauses:
        rejected.append(Problem("template", "an empty template has no place to add clauses"))
    elif plan.additions:
        anchor = _insertion_point(parsed, dropped)
        names = {c.name for c in parsed.clauses}
        for addition in plan.additions:
            source = addition.clause
            text = _adapt_library_clause(addition, rejected)
            name = slug(source.kind or source.heading)
            while name in names:
                name += "_added"
            names.add(name)
            inserted.setdefault(anchor, []).append(text)
            report.append(
                ClauseReport(
                    name,
                    f"document {source.document_title!r} ({source.document_id}), "
                    f"section {source.heading!r}",
                    text != source.text,
                    word_diff(source.text, text),
                    text,
                )
            )

    blocks: list[Block] = []
    for index, block in enumerate(parsed.blocks):
        if index not in dropped:
            blocks.append(
                Block(apply_spans(block.text, spans.get(index, [])), block.kind, block.level)
            )
        number = _ITEM_NUMBER.match(block.text)
        for offset, text in enumerate(inserted.get(index, []), start=1):
            if block.kind == "item" and number:
                text = f"{number.group(1)}{int(number.group(2)) + offset}. {text}"
            blocks.append(Block(text, block.kind if block.kind == "item" else "para"))
    return ComposedDraft(blocks, spans, dropped, inserted, report, rejected)
