"""DOCX templates with python-docx: paragraphs as blocks, edits that keep runs, styles and numbering.

Word splits text into runs wherever formatting or editing history changes, so one
``{{party_a}}`` may lie across three runs. An edit of a character span is applied to
the runs it covers: the replacement goes into the run where the span starts (keeping
that run's formatting), the rest of the span is cut from the following runs, and the
paragraph's properties (style, numbering) are never touched. Paragraphs not edited keep
their XML exactly.
"""

from __future__ import annotations

import copy
import io
from typing import Any

from drafting.template import Block

Span = tuple[int, int, str]


def load(data: bytes) -> Any:
    from docx import Document

    return Document(io.BytesIO(data))


def save(document: Any) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def paragraph_text(paragraph: Any) -> str:
    """The text the block model sees: the paragraph's own runs (the spans edits refer to)."""
    return "".join(run.text for run in paragraph.runs)


def _kind(paragraph: Any) -> tuple[str, int]:
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    if style == "Title":
        return "heading", 1
    if style.startswith("Heading"):
        level = style.removeprefix("Heading").strip()
        return "heading", int(level) if level.isdigit() else 1
    p_pr = paragraph._p.pPr
    if style.startswith("List Number") or (p_pr is not None and p_pr.numPr is not None):
        return "item", 0
    if style.startswith("List"):
        return "bullet", 0
    return ("para" if paragraph_text(paragraph).strip() else "blank"), 0


def body_paragraphs(document: Any) -> list[Any]:
    """Every paragraph of the body in reading order, table cells (merged ones once) included."""
    from docx.oxml.ns import qn
    from docx.text.paragraph import Paragraph

    body = document._body
    return [Paragraph(element, body) for element in document.element.body.iter(qn("w:p"))]


def docx_blocks(document: Any) -> list[Block]:
    """One block per body paragraph, table cells included (headers and footers are not templated)."""
    blocks = []
    for paragraph in body_paragraphs(document):
        kind, level = _kind(paragraph)
        blocks.append(Block(paragraph_text(paragraph), kind, level))
    return blocks


def replace_spans(paragraph: Any, spans: list[Span]) -> None:
    """Apply non-overlapping ``(start, end, text)`` edits to the runs of ``paragraph``."""
    runs = paragraph.runs
    for start, end, replacement in sorted(spans, key=lambda s: s[0], reverse=True):
        bounds, offset = [], 0
        for run in runs:
            bounds.append((offset, offset + len(run.text)))
            offset += len(run.text)
        first = next((i for i, (a, b) in enumerate(bounds) if a <= start < b), None)
        if first is None:
            if start != offset or not runs:
                raise ValueError(f"span {start}..{end} is outside the paragraph")
            first = len(runs) - 1
        for i in range(first, len(runs)):
            run_start, run_end = bounds[i]
            if i > first and run_start >= end:
                break
            text = runs[i].text
            cut_to = min(end, run_end) - run_start
            if i == first:
                cut_from = start - run_start
                runs[i].text = text[:cut_from] + replacement + text[max(cut_to, cut_from) :]
            else:
                runs[i].text = text[cut_to:]


def remove_paragraph(paragraph: Any) -> None:
    element = paragraph._p
    element.getparent().remove(element)


def insert_after(anchor: Any, text: str) -> Any:
    """A new paragraph after ``anchor`` with its properties (style, numbering) and ``text``."""
    from docx.text.paragraph import Paragraph

    element = copy.deepcopy(anchor._p)
    properties = element.pPr
    for child in list(element):
        if child is not properties:
            element.remove(child)
    anchor._p.addnext(element)
    paragraph = Paragraph(element, anchor._parent)
    runs = anchor.runs
    run = paragraph.add_run(text)
    if runs and runs[-1]._r.rPr is not None:
        run._r.insert(0, copy.deepcopy(runs[-1]._r.rPr))
    return paragraph
