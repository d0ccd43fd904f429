"""Ruled tables are found from pdfium's vector paths: lines, rectangles and forms alike."""

from __future__ import annotations

from pathlib import Path

import pypdfium2 as pdfium

from ingest.parse_pdf import partition_pdf_windows
from ingest.pdf_tables import find_tables

ROWS = [["Expense", "Limit"], ["Hotel", "300 USD"], ["Meals", "80 USD"]]


def _tables_of(path: Path) -> list:
    pdf = pdfium.PdfDocument(str(path))
    try:
        page = pdf[0]
        textpage = page.get_textpage()
        try:
            return find_tables(page, textpage)
        finally:
            textpage.close()
            page.close()
    finally:
        pdf.close()


def _draw_cells(canvas, x: float, y: float, rows: list[list[str]], w=120.0, h=24.0) -> None:
    """Each cell as its own stroked rectangle (the PDF ``re`` operator), text inside."""
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            left, bottom = x + c * w, y - (r + 1) * h
            canvas.rect(left, bottom, w, h, stroke=1, fill=0)
            canvas.drawString(left + 6, bottom + 8, text)


def test_table_of_rectangles_inside_a_moved_form_is_found(tmp_path):
    from reportlab.pdfgen.canvas import Canvas

    path = tmp_path / "form.pdf"
    canvas = Canvas(str(path))
    canvas.drawString(72, 780, "Travel limits apply to every trip.")
    canvas.line(72, 770, 520, 770)  # a lone rule is no table
    canvas.beginForm("limits")
    _draw_cells(canvas, 0, 0, ROWS)
    canvas.endForm()
    canvas.saveState()
    canvas.translate(100, 700)  # the form's own coordinates start at its origin
    canvas.doForm("limits")
    canvas.restoreState()
    canvas.save()

    tables = _tables_of(path)
    assert len(tables) == 1
    assert tables[0].rows == ROWS
    x0, top, x1, bottom = tables[0].bbox  # origin top left, in points
    assert abs(x0 - 100) < 1 and abs(x1 - 340) < 1
    page_height = 841.89
    assert abs(top - (page_height - 700)) < 1 and abs(bottom - (page_height - 628)) < 1


def test_merged_cell_keeps_its_text_once(tmp_path):
    from reportlab.platypus import SimpleDocTemplate, Table, TableStyle

    path = tmp_path / "span.pdf"
    table = Table([["Region", "Limit", ""], ["North", "300 USD", "approved"]])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, "black"), ("SPAN", (1, 0), (2, 0))]))
    SimpleDocTemplate(str(path)).build([table])

    (found,) = _tables_of(path)
    assert found.rows[0][:2] == ["Region", "Limit"]
    assert found.rows[0][2] is None  # merged into "Limit"
    assert found.rows[1] == ["North", "300 USD", "approved"]


def test_page_without_rules_yields_no_table(tmp_path):
    from reportlab.pdfgen.canvas import Canvas

    path = tmp_path / "prose.pdf"
    canvas = Canvas(str(path))
    canvas.drawString(72, 780, "Only prose here.")
    canvas.save()
    assert _tables_of(path) == []


def test_windows_parse_each_window_from_a_fresh_source(tmp_path):
    """A table on every page of a multi-window file still comes back per page."""
    from reportlab.pdfgen.canvas import Canvas

    path = tmp_path / "many.pdf"
    canvas = Canvas(str(path))
    for n in range(1, 6):
        canvas.drawString(72, 780, f"Page {n} limits.")
        _draw_cells(canvas, 72, 700, [["Item", "Limit"], [f"Item {n}", f"{n} USD"]])
        canvas.showPage()
    canvas.save()

    rows = [
        (el.metadata.page_number, el.text)
        for window in partition_pdf_windows(path, window=2)
        for el in window
        if el.category == "Table"
    ]
    assert rows == [(n, f"Item: Item {n}; Limit: {n} USD") for n in range(1, 6)]
