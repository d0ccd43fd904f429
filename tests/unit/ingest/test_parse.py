"""Each supported format parses into text with pages and section paths; bad files fail clearly."""

from __future__ import annotations

import pytest

from ingest.errors import CorruptDocument, EmptyDocument, IngestError, UnsupportedFileType
from ingest.parse import SUPPORTED_EXTENSIONS, parse_document


def _body(doc):
    return [e for e in doc.elements if not e.is_heading]


def test_markdown_sections_follow_heading_nesting(docs):
    doc = parse_document(docs["md"])
    assert doc.title == "Leave policy"
    by_text = {e.text: e for e in _body(doc)}
    carry = next(e for t, e in by_text.items() if t.startswith("You can carry over"))
    award = next(e for t, e in by_text.items() if t.startswith("Award leave expires"))
    sick = next(e for t, e in by_text.items() if t.startswith("Sick leave accrues"))
    assert carry.section == "Annual leave"
    assert award.section == "Annual leave > Award leave"
    assert sick.section == "Sick leave"  # a sibling heading closes the deeper one
    assert all(e.page is None for e in doc.elements)


def test_docx_headings_become_sections(docs):
    doc = parse_document(docs["docx"])
    assert doc.title == "Password requirements"
    rotate = next(e for e in _body(doc) if "sixty days" in e.text)
    assert rotate.section == "Rotate passwords"
    assert rotate.page is None


def test_html_skips_scripts_and_keeps_sections(docs):
    doc = parse_document(docs["html"])
    texts = " ".join(e.text for e in doc.elements)
    assert "var x" not in texts
    eligible = next(e for e in _body(doc) if "twelve months" in e.text)
    assert eligible.section == "Eligibility"
    assert parse_document(docs["html"].rename(docs["html"].with_suffix(".htm"))).elements


def test_txt_parses(docs):
    doc = parse_document(docs["txt"])
    assert any("nine in the morning" in e.text for e in doc.elements)


def test_pdf_keeps_page_numbers(docs):
    doc = parse_document(docs["pdf"])
    pages = {e.page for e in doc.elements if "voucher" in e.text}
    assert pages == {2}
    assert {e.page for e in doc.elements if "fourteen days" in e.text} == {1}


def test_corrupt_pdf_is_reported_as_corrupt(docs):
    with pytest.raises(CorruptDocument, match="broken.pdf could not be read as a PDF"):
        parse_document(docs["corrupt_pdf"])


def test_fake_docx_is_reported_as_corrupt(docs):
    with pytest.raises(CorruptDocument, match="fake.docx"):
        parse_document(docs["fake_docx"])


@pytest.mark.parametrize("name", ["empty", "blank", "image_pdf"])
def test_documents_without_text_are_empty(docs, name):
    with pytest.raises(EmptyDocument, match="empty|no text"):
        parse_document(docs[name])


def test_unsupported_type_lists_supported_ones(docs):
    with pytest.raises(UnsupportedFileType) as info:
        parse_document(docs["unsupported"])
    assert ".ods" in info.value.message
    for ext in SUPPORTED_EXTENSIONS:
        assert ext in info.value.message


def test_missing_file_is_an_ingest_error(tmp_path):
    with pytest.raises(IngestError, match="not found"):
        parse_document(tmp_path / "nope.md")
