"""PDF tables, scanned PDFs, .pptx, .xlsx and .eml parse into rows/pages/sections that retrieval
can use; fixtures are generated here (openpyxl, python-pptx, reportlab, PIL, email)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from ingest.errors import CorruptDocument
from ingest.parse import parse_document
from ingest.parse_pdf import partition_pdf_windows, table_rows
from tests.unit.ingest.conftest import make_pdf


def _texts(doc) -> list[str]:
    return [e.text for e in doc.elements if not e.is_heading]


def test_table_rows_pair_each_value_with_its_header():
    rows = [
        ["Item", "Limit", None],
        ["Laptop", "2,000", ""],
        [None, None, None],
        ["Phone", "", "x"],
    ]
    assert table_rows(rows) == ["Item: Laptop; Limit: 2,000", "Item: Phone; x"]
    assert table_rows([["Only", "header"]]) == ["Only; header"]
    assert table_rows([]) == []


def test_xlsx_rows_keep_their_headers_and_sheet(tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Travel limits"
    sheet.append(["Expense", "Limit (USD)", "Approver"])
    sheet.append(["Hotel per night", 300, "Finance"])
    sheet.append(["Meals per day", 80.0, None])
    second = book.create_sheet("Equipment")
    second.append(["Item", "Budget"])
    second.append(["Desk setup", 2000])
    path = tmp_path / "limits.xlsx"
    book.save(path)

    doc = parse_document(path)
    rows = {e.text: e for e in doc.elements if not e.is_heading}
    hotel = rows["Expense: Hotel per night; Limit (USD): 300; Approver: Finance"]
    assert hotel.section == "Travel limits"
    assert "Expense: Meals per day; Limit (USD): 80" in rows
    assert rows["Item: Desk setup; Budget: 2000"].section == "Equipment"


def test_pptx_slides_are_pages_with_titles_tables_and_notes(tmp_path):
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
    first.shapes.title.text = "Onboarding week"
    first.placeholders[1].text_frame.text = "Laptops ship before your first day."
    first.notes_slide.notes_text_frame.text = "Remind managers to order badges."
    second = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    second.shapes.title.text = "Budgets by region"
    table = second.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for r, row in enumerate([["Region", "Budget"], ["EMEA", "40k"], ["APAC", "25k"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    path = tmp_path / "deck.pptx"
    deck.save(path)

    doc = parse_document(path)
    by_text = {e.text: e for e in doc.elements if not e.is_heading}
    laptops = by_text["Laptops ship before your first day."]
    assert (laptops.page, laptops.section) == (1, "Onboarding week")
    assert by_text["Remind managers to order badges."].page == 1
    emea = by_text["Region: EMEA; Budget: 40k"]
    assert (emea.page, emea.section) == (2, "Budgets by region")
    assert "Region: APAC; Budget: 25k" in by_text


def test_eml_subject_headers_body_and_attachment_names(tmp_path):
    message = EmailMessage()
    message["Subject"] = "New expense deadline"
    message["From"] = "finance@example.com"
    message["To"] = "all@example.com"
    message.set_content("Hello all,\n\nSubmit expenses within 60 days of purchase.\n\nThanks")
    message.add_attachment(b"%PDF-", maintype="application", subtype="pdf", filename="policy.pdf")
    path = tmp_path / "notice.eml"
    path.write_bytes(bytes(message))

    doc = parse_document(path)
    texts = _texts(doc)
    assert doc.title == "New expense deadline"
    assert "Submit expenses within 60 days of purchase." in texts
    assert any(t.startswith("From: finance@example.com; To: all@example.com") for t in texts)
    assert "Attachments: policy.pdf" in texts


def test_html_only_eml_is_reduced_to_text(tmp_path):
    message = EmailMessage()
    message["Subject"] = "Office move"
    message.set_content(
        "<html><body><h1>Office move</h1><p>The office moves to Pier 3 on 1 June.</p></body></html>",
        subtype="html",
    )
    path = tmp_path / "move.eml"
    path.write_bytes(bytes(message))
    texts = " ".join(e.text for e in parse_document(path).elements)
    assert "The office moves to Pier 3 on 1 June." in texts
    assert "<p>" not in texts


def test_corrupt_office_file_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "sheet.xlsx"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CorruptDocument, match="sheet.xlsx could not be read as an Excel workbook"):
        parse_document(path)


def test_pdf_table_rows_keep_headers_and_replace_loose_cells(tmp_path):
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Table, TableStyle

    path = tmp_path / "limits.pdf"
    styles = getSampleStyleSheet()
    table = Table(
        [
            ["Expense", "Limit", "Receipt"],
            ["Hotel", "300 USD", "always"],
            ["Meals", "80 USD", "over 25 USD"],
        ]
    )
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, "black")]))
    SimpleDocTemplate(str(path), pagesize=A4).build(
        [Paragraph("Travel limits apply to every trip.", styles["Normal"]), table]
    )

    doc = parse_document(path)
    texts = _texts(doc)
    assert "Expense: Hotel; Limit: 300 USD; Receipt: always" in texts
    assert "Expense: Meals; Limit: 80 USD; Receipt: over 25 USD" in texts
    assert "Travel limits apply to every trip." in " ".join(texts)
    assert not any(t.strip() == "Hotel" for t in texts)  # the loose cell is gone
    assert {e.page for e in doc.elements} == {1}


def test_pdf_windows_keep_page_numbers_of_the_whole_file(tmp_path):
    path = tmp_path / "long.pdf"
    path.write_bytes(make_pdf([[f"This is page {n} of the handbook."] for n in range(1, 6)]))
    windows = list(partition_pdf_windows(path, window=2))
    assert len(windows) == 3
    pages = {el.metadata.page_number: el.text for w in windows for el in w}
    assert sorted(pages) == [1, 2, 3, 4, 5]
    assert "page 4" in pages[4]


@pytest.mark.slow
def test_scanned_pdf_is_read_by_ocr(tmp_path):
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("RGB", (1240, 1754), "white")  # A4 at 150 dpi, no text layer
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=40)
    draw.text((120, 200), "Badge replacement costs 25 dollars.", fill="black", font=font)
    draw.text((120, 300), "Ask the security desk first.", fill="black", font=font)
    path = tmp_path / "scan.pdf"
    page.save(path, "PDF", resolution=150)

    doc = parse_document(path)
    text = " ".join(e.text for e in doc.elements).lower()
    assert "badge replacement" in text
    assert "security desk" in text
    assert {e.page for e in doc.elements} == {1}
