"""Drafting end to end: check the request, ask the model for a plan (if instructed), compose, render DOCX.

Nothing is generated from invalid input: every problem of the values and requested
clauses is collected and raised together before the model or the renderer runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from drafting import docx_io
from drafting.compose import ClauseReport, ComposedDraft, DraftPlan, clause_parameters, compose
from drafting.errors import InvalidInput, InvalidTemplate, Problem
from drafting.fields import check_values
from drafting.library import ClauseLibrary
from drafting.markdown_io import markdown_blocks, markdown_to_docx
from drafting.plan import parse_plan, plan_messages, plan_schema, response_format
from drafting.template import Block, ParsedTemplate, parse_template
from ingest.stores.acl import AccessScope
from llm.client import LLMClient, LLMError

FORMATS = (".md", ".docx")


def template_blocks(data: bytes, extension: str) -> list[Block]:
    """The blocks of a template file (``.md`` decoded as UTF-8, ``.docx`` by paragraph)."""
    try:
        if extension == ".docx":
            return docx_io.docx_blocks(docx_io.load(data))
        return markdown_blocks(data.decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - any failure to read an untrusted file is the same to the caller
        reason = f"cannot read the {extension} file: {type(exc).__name__}: {exc}"[:300]
        raise InvalidTemplate(
            "the template file cannot be read", [Problem("file", reason)]
        ) from None


def load_template(data: bytes, extension: str) -> ParsedTemplate:
    """Parse a template file; ``InvalidTemplate`` lists every problem."""
    return parse_template(template_blocks(data, extension))


@dataclass
class TemplateSource:
    """A stored template version as the drafter needs it."""

    label: str
    extension: str
    data: bytes
    parsed: ParsedTemplate


@dataclass
class DraftOutput:
    docx: bytes
    text: str  # the draft as text (Markdown for .md templates, paragraphs for .docx)
    report: list[ClauseReport]
    rejected: list[Problem]
    plan: DraftPlan = field(default_factory=DraftPlan)


def render_docx(source: TemplateSource, composed: ComposedDraft) -> bytes:
    """The draft DOCX: a DOCX template edited in place (styles, numbering kept), or Markdown rendered."""
    if source.extension != ".docx":
        return markdown_to_docx(composed.blocks)
    document = docx_io.load(source.data)
    paragraphs = docx_io.body_paragraphs(document)
    for index, spans in composed.block_spans.items():
        docx_io.replace_spans(paragraphs[index], spans)
    for index, texts in composed.inserted.items():
        anchor = paragraphs[index]
        for text in texts:
            anchor = docx_io.insert_after(anchor, text)
    for index in composed.dropped:
        docx_io.remove_paragraph(paragraphs[index])
    return docx_io.save(document)


def check_request(
    parsed: ParsedTemplate, values: dict[str, Any], include: list[str]
) -> dict[str, str]:
    """Rendered field values; ``InvalidInput`` listing every problem of values and clause names."""
    problems = [
        Problem(name, "this template has no such optional clause")
        for name in include
        if name not in parsed.optional_clauses
    ]
    rendered, value_problems = check_values(parsed.fields, values, set(include))
    problems += value_problems
    if problems:
        raise InvalidInput(f"{len(problems)} problem(s) with the draft request", problems)
    return rendered


class Drafter:
    """Drafts from templates; the model (optional) only plans, under a JSON schema."""

    def __init__(
        self,
        llm: LLMClient | None,
        library: ClauseLibrary | None,
        plan_tokens: int = 512,
        library_k: int = 5,
    ):
        self._llm = llm
        self._library = library
        self._plan_tokens = plan_tokens
        self._library_k = library_k

    async def ask_plan(
        self, parsed: ParsedTemplate, instructions: str, scope: AccessScope
    ) -> DraftPlan:
        """The model's plan for ``instructions``: ``LLMError`` or ``PlanRejected`` if it has none."""
        if self._llm is None:
            raise LLMError("no LLM is configured for drafting instructions")
        candidates = (  # SQL and stitching off the event loop
            await asyncio.to_thread(self._library.search, instructions, scope, self._library_k)
            if self._library
            else []
        )
        parameters = {c.name: clause_parameters(parsed, c) for c in parsed.clauses}
        schema = plan_schema(parsed.optional_clauses, parameters, candidates)
        messages = plan_messages(
            {c.name: c.title for c in parsed.clauses},
            parsed.optional_clauses,
            parameters,
            candidates,
            instructions,
        )
        try:
            answer = await self._llm.chat(
                messages, max_tokens=self._plan_tokens, response_format=response_format(schema)
            )
        except LLMError as exc:
            # A harmony model on our engine cannot mask only its final channel, so the server
            # refuses response_format; ask without it and validate the answer all the same.
            if exc.status != 400 or "response_format" not in str(exc):
                raise
            answer = await self._llm.chat(messages, max_tokens=self._plan_tokens)
        return parse_plan(answer.text, schema, candidates)

    async def draft(
        self,
        source: TemplateSource,
        values: dict[str, Any],
        include: list[str],
        instructions: str | None,
        scope: AccessScope,
    ) -> DraftOutput:
        parsed = source.parsed
        rendered = check_request(parsed, values, include)
        plan = DraftPlan(include=list(include))
        rejected: list[Problem] = []
        if instructions and instructions.strip():
            asked = await self.ask_plan(parsed, instructions, scope)
            for name in asked.include:
                _, missing = check_values(parsed.fields, values, {name})
                if missing:
                    rejected.append(Problem(name, "clause needs fields the request lacks"))
                elif name not in plan.include:
                    plan.include.append(name)
            plan.edits, plan.additions = asked.edits, asked.additions
        return await asyncio.to_thread(self._finish, source, rendered, plan, rejected)

    @staticmethod
    def _finish(
        source: TemplateSource, rendered: dict[str, str], plan: DraftPlan, rejected: list[Problem]
    ) -> DraftOutput:
        """Compose and render (CPU and zip work, run off the event loop)."""
        composed = compose(source.parsed, rendered, plan, source.label)
        text = "\n".join(block.text for block in composed.blocks)
        docx = render_docx(source, composed)
        return DraftOutput(docx, text, composed.report, rejected + composed.rejected, plan)
