"""Parse a template's blocks into fields, clauses and placeholder positions, or list every problem.

Syntax (same in Markdown and DOCX; a marker stands alone in its line or paragraph):

- ``{{name}}``, ``{{name: date}}`` ...: a typed field (``drafting.fields``). A field's type
  is declared once; later uses write ``{{name}}``. Declaring it twice is an error.
- ``{% clause non_solicit %}`` ... ``{% end %}``: an optional clause, left out of a draft
  unless included (by the request or the model's plan).

Clauses are the units a draft report traces: each heading and each numbered item starts
one (its title is the heading, or the item's bold run-in title), text before the first
one is the ``preamble``, and an optional clause is one clause whatever it holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from drafting.errors import InvalidTemplate, Problem
from drafting.fields import FieldSpec, parse_declaration

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
CLAUSE_OPEN = re.compile(r"^\s*\{%\s*clause\s+(\S+?)\s*%\}\s*$")
CLAUSE_END = re.compile(r"^\s*\{%\s*end\s*%\}\s*$")
CLAUSE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_BOLD_TITLE = re.compile(r"^\W*(?:\d+\.\s*)?\*\*(.+?)\*\*")
_LEADING_NUMBER = re.compile(r"^\s*(?:#+\s*|\d+(?:\.\d+)*[.)]?\s+)")


@dataclass(frozen=True)
class Block:
    """One line of a Markdown template or one paragraph of a DOCX template."""

    text: str
    kind: str = "para"  # heading | item | bullet | para | blank
    level: int = 0


@dataclass(frozen=True)
class Placeholder:
    """Where a field occurs: block index and character span of ``{{...}}`` in its text."""

    block: int
    start: int
    end: int
    name: str


@dataclass
class Clause:
    """A traceable unit of the template: its blocks (marker blocks excluded) and title."""

    name: str
    title: str
    blocks: list[int] = field(default_factory=list)
    optional: bool = False

    def as_json(self) -> dict:
        return {"name": self.name, "title": self.title, "optional": self.optional}


@dataclass
class ParsedTemplate:
    blocks: list[Block]
    fields: list[FieldSpec]
    clauses: list[Clause]
    placeholders: list[Placeholder]
    markers: set[int]

    def clause_text(self, clause: Clause) -> str:
        """The clause as written in the template (its lines joined by newlines)."""
        return "\n".join(self.blocks[i].text for i in clause.blocks)

    def clause(self, name: str) -> Clause | None:
        return next((c for c in self.clauses if c.name == name), None)

    @property
    def optional_clauses(self) -> list[str]:
        return [c.name for c in self.clauses if c.optional]


def slug(title: str) -> str:
    words = re.findall(r"[a-z0-9]+", title.lower())
    return "_".join(words)[:48].strip("_") or "clause"


def block_title(block: Block) -> str:
    """Human title of a heading or numbered item (``1. **Term**. ...`` -> ``Term``)."""
    if match := _BOLD_TITLE.match(block.text):
        return match.group(1).strip(" .:")
    text = _LEADING_NUMBER.sub("", block.text).strip()
    if block.kind == "heading":
        return text.strip("*_ ")
    return " ".join(re.split(r"[.:]\s", text, maxsplit=1)[0].split()[:8]).strip("*_ ")


def _scan_placeholders(
    index: int, text: str, problems: list[Problem]
) -> list[tuple[Placeholder, FieldSpec, bool]]:
    found: list[tuple[Placeholder, FieldSpec, bool]] = []
    for match in PLACEHOLDER.finditer(text):
        spec, error, typed = parse_declaration(match.group(1))
        if error:
            problems.append(Problem(_name_of(match.group(1)), f"paragraph {index + 1}: {error}"))
            continue
        assert spec is not None
        found.append((Placeholder(index, match.start(), match.end(), spec.name), spec, typed))
    rest = PLACEHOLDER.sub("", text)
    if "{{" in rest or "}}" in rest:
        problems.append(
            Problem(
                "template", f"paragraph {index + 1}: unbalanced '{{{{' or '}}}}' in {text[:80]!r}"
            )
        )
    if "{%" in rest and not (CLAUSE_OPEN.match(text) or CLAUSE_END.match(text)):
        problems.append(
            Problem(
                "template",
                f"paragraph {index + 1}: a clause marker must stand alone as "
                f"'{{% clause name %}}' or '{{% end %}}': {text[:80]!r}",
            )
        )
    return found


def _name_of(inner: str) -> str:
    return inner.partition(":")[0].strip() or "template"


def parse_template(blocks: list[Block]) -> ParsedTemplate:
    """The template's fields and clauses; raises ``InvalidTemplate`` listing every problem."""
    problems: list[Problem] = []
    declared: dict[str, FieldSpec] = {}
    typed_names: set[str] = set()
    order: list[str] = []
    placeholders: list[Placeholder] = []
    field_clauses: dict[str, list[tuple[str, bool]]] = {}
    clauses: list[Clause] = [Clause("preamble", "Preamble")]
    markers: set[int] = set()
    optional: Clause | None = None
    section_title = "Preamble"

    def start(title: str, is_optional: bool = False, name: str | None = None) -> Clause:
        clause = Clause(name or slug(title), title, optional=is_optional)
        clauses.append(clause)
        return clause

    for index, block in enumerate(blocks):
        if match := CLAUSE_OPEN.match(block.text):
            markers.add(index)
            name = match.group(1)
            if optional is not None:
                problems.append(Problem(name, f"paragraph {index + 1}: clauses cannot nest"))
            if not CLAUSE_NAME.match(name):
                problems.append(Problem(name, "clause names are lower-case letters, digits, _"))
            optional = start(name.replace("_", " ").capitalize(), True, name)
            continue
        if CLAUSE_END.match(block.text):
            markers.add(index)
            if optional is None:
                problems.append(Problem("template", f"paragraph {index + 1}: end without clause"))
            else:
                optional = None
                start(section_title)  # text after the optional clause continues the section
            continue
        if optional is None and block.kind in ("heading", "item"):
            section_title = block_title(block)
            start(section_title)
        current = clauses[-1]
        if optional is not None and block.kind in ("heading", "item") and len(current.blocks) == 0:
            current.title = block_title(block)
        current.blocks.append(index)
        for placeholder, spec, typed in _scan_placeholders(index, block.text, problems):
            placeholders.append(placeholder)
            field_clauses.setdefault(spec.name, []).append((current.name, current.optional))
            if spec.name not in declared:
                order.append(spec.name)
            if typed and spec.name in typed_names:
                problems.append(
                    Problem(
                        spec.name,
                        f"paragraph {index + 1}: duplicate placeholder: the type of "
                        f"{spec.name} is declared more than once (write {{{{{spec.name}}}}} after "
                        "the first)",
                    )
                )
            elif typed or spec.name not in declared:
                declared[spec.name] = spec
                if typed:
                    typed_names.add(spec.name)
    if optional is not None:
        problems.append(Problem(optional.name, "clause is never closed with {% end %}"))
    clauses = [c for c in clauses if c.blocks]
    optional_names = [c.name for c in clauses if c.optional]
    for name in sorted({n for n in optional_names if optional_names.count(n) > 1}):
        problems.append(Problem(name, "duplicate optional clause name"))
    seen: dict[str, int] = dict.fromkeys(optional_names, 1)
    for clause in clauses:
        if clause.optional:
            continue
        count = seen.get(clause.name, 0)
        seen[clause.name] = count + 1
        if count:
            clause.name = f"{clause.name}_{count + 1}"
    if problems:
        raise InvalidTemplate(f"the template has {len(problems)} problem(s)", problems)
    fields = []
    for name in order:
        uses = field_clauses[name]
        fields.append(
            FieldSpec(
                **{
                    **declared[name].__dict__,
                    "required": any(not is_optional for _, is_optional in uses),
                    "clauses": tuple(dict.fromkeys(c for c, is_optional in uses if is_optional)),
                }
            )
        )
    return ParsedTemplate(blocks, fields, clauses, placeholders, markers)
