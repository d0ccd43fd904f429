"""PowerPoint (.pptx) and Excel (.xlsx) files as elements with pages and headings.

- .pptx: a slide is a page (citations name the slide number); its title is a heading, its
  text frames are paragraphs, its tables become one line per row with the column headers
  ("Region: EMEA; Budget: 40k"), and speaker notes are kept after the slide's text.
- .xlsx: a sheet is a section headed by its name; the first non-empty row is taken as the
  header and each further row becomes "Header: value; ..." so a retrieved row still says
  what its numbers are. Formulas are read as their cached values. Rows are streamed
  (openpyxl read-only mode), so a large workbook is never loaded whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingest.parse_pdf import table_rows
from ingest.raw_elements import RawElement, body, heading

MAX_SHEET_ROWS = 100_000  # past this a sheet is data, not a document; the rest is skipped


def partition_pptx(path: Path) -> list[RawElement]:
    from pptx import Presentation

    deck = Presentation(str(path))
    out: list[RawElement] = []
    for number, slide in enumerate(deck.slides, start=1):
        title_shape = slide.shapes.title
        if title_shape is not None and title_shape.text_frame.text.strip():
            out.append(heading(" ".join(title_shape.text_frame.text.split()), 1, number))
        for shape in slide.shapes:
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            out.extend(_shape_elements(shape, number))
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                out.append(body(notes, number))
    return out


def _shape_elements(shape: Any, page: int) -> list[RawElement]:
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
        return [body(line, page, "Table") for line in table_rows(rows)]
    if getattr(shape, "shape_type", None) is not None and hasattr(shape, "shapes"):
        return [el for inner in shape.shapes for el in _shape_elements(inner, page)]  # group
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        return [
            body(text, page, "ListItem" if p.level else "NarrativeText")
            for p in shape.text_frame.paragraphs
            if (text := " ".join(p.text.split()))
        ]
    return []


def partition_xlsx(path: Path) -> list[RawElement]:
    from openpyxl import load_workbook

    book = load_workbook(str(path), read_only=True, data_only=True)
    out: list[RawElement] = []
    try:
        for sheet in book.worksheets:
            out.append(heading(sheet.title, 1))
            rows: list[list[str | None]] = []
            for i, row in enumerate(sheet.iter_rows(values_only=True)):
                if i >= MAX_SHEET_ROWS:
                    break
                rows.append([_cell(v) for v in row])
            out.extend(body(line, None, "Table") for line in table_rows(rows))
    finally:
        book.close()
    return out


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
