"""A filled corpus NDA keeps every unchanged clause byte for byte; DOCX edits keep runs, styles, numbering."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess

import pytest
from docx import Document
from lxml import etree

from drafting.generate import Drafter, TemplateSource, load_template
from ingest.stores.acl import AccessScope
from tests.unit.drafting.nda import VALID_VALUES, nda_docx_template, nda_source, nda_template


def draft(data: bytes, extension: str, values: dict, include: list[str] = ()):
    source = TemplateSource("'NDA' v1", extension, data, load_template(data, extension))
    output = asyncio.run(
        Drafter(None, None).draft(source, values, list(include), None, AccessScope.everything())
    )
    return source, output


def test_filled_markdown_nda_keeps_unchanged_clauses_byte_identical():
    template = nda_template()
    _, output = draft(template.encode(), ".md", VALID_VALUES)
    unchanged = [c for c in output.report if not c.changed]
    changed = {c.name for c in output.report if c.changed}
    assert changed == {"effective_date", "governing_law_jurisdiction", "mnda_modifications"}
    assert "non_solicit" not in {c.name for c in output.report}  # optional, not included
    standard_terms = nda_source().split("## Standard Terms", 1)[1]
    for clause in unchanged:
        assert clause.text in template and clause.text in output.text, clause.name
    # the Standard Terms, the legal core, come out exactly as in the corpus file
    assert standard_terms.split("\nCommon Paper")[0] in output.text
    assert "{{" not in output.text and "{%" not in output.text
    assert "Acme Corp" in output.text and "March 1, 2026" in output.text


def test_included_optional_clause_is_filled_and_reported_as_from_the_template():
    _, output = draft(
        nda_template().encode(),
        ".md",
        VALID_VALUES | {"non_solicit_months": "12"},
        ["non_solicit"],
    )
    clause = next(c for c in output.report if c.name == "non_solicit")
    assert clause.changed and "{+12+}" in clause.diff
    assert "template 'NDA' v1" in clause.source and "Non-Solicitation" in clause.source
    assert "For 12 months after the Effective Date" in output.text


def xml(paragraph) -> bytes:
    return etree.tostring(paragraph._p)


def test_docx_nda_unchanged_paragraphs_are_xml_identical_and_the_file_opens():
    data = nda_docx_template()
    source, output = draft(data, ".docx", VALID_VALUES)
    parsed = source.parsed
    template_paragraphs = Document(io.BytesIO(data)).paragraphs
    drafted = Document(io.BytesIO(output.docx)).paragraphs  # opens with python-docx
    optional_blocks = {i for c in parsed.clauses if c.optional for i in c.blocks}
    kept = [
        i
        for i in range(len(template_paragraphs))
        if i not in parsed.markers and i not in optional_blocks
    ]
    assert len(drafted) == len(kept)
    with_fields = {p.block for p in parsed.placeholders}
    for out, index in zip(drafted, kept, strict=True):
        if index in with_fields:
            assert "{{" not in out.text
            assert out.style.name == template_paragraphs[index].style.name
        else:
            assert xml(out) == xml(template_paragraphs[index])
    numbered = [p for p in drafted if p.style.name == "List Number"]
    assert len(numbered) == 11  # the Standard Terms stay a numbered list


def split_run_template() -> bytes:
    document = Document()
    document.add_heading("Consulting Agreement", level=1)
    paragraph = document.add_paragraph("This agreement is between ")
    paragraph.add_run("{{par").bold = True
    paragraph.add_run("ty_a}} and {{party")
    paragraph.add_run("_b: text}}").italic = True
    paragraph.add_run(", signed on {{signed: date}}.")
    item = document.add_paragraph("Term. This agreement lasts ", style="List Number")
    item.add_run("{{term_months: int[1..24]}}").bold = True
    item.add_run(" months.")
    document.add_paragraph("Notices go to the addresses above.", style="List Number")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_placeholders_split_across_runs_are_filled_keeping_run_formatting_and_styles():
    data = split_run_template()
    source, output = draft(
        data,
        ".docx",
        {"party_a": "Acme Corp", "party_b": "Globex", "signed": "2026-02-03", "term_months": 6},
    )
    assert [f.name for f in source.parsed.fields] == ["party_a", "party_b", "signed", "term_months"]
    heading, intro, term, notices = Document(io.BytesIO(output.docx)).paragraphs
    assert (
        intro.text == "This agreement is between Acme Corp and Globex, signed on February 3, 2026."
    )
    assert intro.runs[1].bold and intro.runs[1].text == "Acme Corp"
    assert term.text == "Term. This agreement lasts 6 months." and term.runs[1].bold
    assert (heading.style.name, term.style.name, notices.style.name) == (
        "Heading 1",
        "List Number",
        "List Number",
    )
    original = Document(io.BytesIO(data)).paragraphs
    assert xml(notices) == xml(original[3]) and xml(heading) == xml(original[0])


@pytest.mark.parametrize("extension", [".md", ".docx"])
def test_draft_converts_with_libreoffice_headless(tmp_path, extension):
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        pytest.skip("LibreOffice (soffice) is not installed; `make office` installs it (opt-in)")
    from pypdf import PdfReader

    data = nda_template().encode() if extension == ".md" else nda_docx_template()
    _, output = draft(data, extension, VALID_VALUES)
    path = tmp_path / "draft.docx"
    path.write_bytes(output.docx)
    subprocess.run(
        [
            soffice,
            f"-env:UserInstallation=file://{tmp_path / 'profile'}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(tmp_path),
            str(path),
        ],
        check=True,
        timeout=180,
        capture_output=True,
    )
    text = " ".join(page.extract_text() for page in PdfReader(tmp_path / "draft.pdf").pages)
    assert "March 1, 2026" in text and "Equitable Relief" in text


def test_placeholders_in_table_cells_are_filled_once_even_in_merged_cells():
    document = Document()
    document.add_paragraph("Signed by the parties below.")
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).text = "Company"
    table.cell(0, 1).text = "{{party_a}}"
    table.cell(0, 2).text = "{{party_b}}"
    merged = table.cell(1, 0).merge(table.cell(1, 2))
    merged.text = "Date: {{signed: date}}"
    buffer = io.BytesIO()
    document.save(buffer)
    source, output = draft(
        buffer.getvalue(), ".docx", {"party_a": "Acme", "party_b": "Globex", "signed": "2026-05-04"}
    )
    assert [f.name for f in source.parsed.fields] == ["party_a", "party_b", "signed"]
    rows = Document(io.BytesIO(output.docx)).tables[0].rows
    assert [c.text for c in rows[0].cells] == ["Company", "Acme", "Globex"]
    assert rows[1].cells[0].text == "Date: May 4, 2026"
