"""Tiny documents of every supported format, built in a temporary directory per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pdf_objects import assemble_pdf

MARKDOWN = """# Leave policy

Intro paragraph about leave at the company.

## Annual leave

You can carry over a maximum of 240 annual leave hours from one leave year to the next.

### Award leave

Award leave expires one year after it is issued.

## Sick leave

Sick leave accrues at four hours per pay period.
"""

HTML = """<!DOCTYPE html><html><head><title>Parental leave</title><script>var x = 1;</script></head>
<body><h1>Parental leave</h1><p>Intro to parental leave for all staff.</p>
<h2>Eligibility</h2><p>You need twelve months of federal service before taking paid parental leave.</p>
<h2>Returning</h2><ul><li>You must return to work for at least twelve weeks.</li></ul></body></html>
"""


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF (Helvetica text, one line per string) with correct xref offsets."""
    objects: list[bytes] = []
    n_pages = len(pages)
    page_ids = [4 + 2 * i for i in range(n_pages)]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {page_ids[i] + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return assemble_pdf(objects)


PDF_PAGES = [
    ["Travel guide", "Book flights through the travel system at least fourteen days ahead."],
    ["Reimbursement", "File your voucher within five business days after your trip ends."],
]


@pytest.fixture
def docs(tmp_path: Path) -> dict[str, Path]:
    """One small file per supported format, plus the bad ones, keyed by what they are."""
    import docx

    files: dict[str, Path] = {}
    files["md"] = tmp_path / "leave.md"
    files["md"].write_text(MARKDOWN, encoding="utf-8")
    files["html"] = tmp_path / "parental.html"
    files["html"].write_text(HTML, encoding="utf-8")
    files["txt"] = tmp_path / "notes.txt"
    files["txt"].write_text(
        "Plain notes.\n\nThe office opens at nine in the morning on weekdays.\n", encoding="utf-8"
    )
    document = docx.Document()
    document.add_heading("Password requirements", level=0)
    document.add_paragraph("Follow these rules for every account.")
    document.add_heading("Use a password manager", level=1)
    document.add_paragraph("Store every password in KeePassXC, never in a browser.")
    document.add_heading("Rotate passwords", level=1)
    document.add_paragraph("Change your network password every sixty days.")
    files["docx"] = tmp_path / "passwords.docx"
    document.save(files["docx"])
    files["pdf"] = tmp_path / "travel.pdf"
    files["pdf"].write_bytes(make_pdf(PDF_PAGES))
    files["corrupt_pdf"] = tmp_path / "broken.pdf"
    files["corrupt_pdf"].write_bytes(
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R\ngarbage without end"
    )
    files["fake_docx"] = tmp_path / "fake.docx"
    files["fake_docx"].write_bytes(b"this is not a zip archive at all")
    files["empty"] = tmp_path / "empty.md"
    files["empty"].write_bytes(b"")
    files["blank"] = tmp_path / "blank.txt"
    files["blank"].write_text("   \n\n  \n", encoding="utf-8")
    files["image_pdf"] = tmp_path / "scan.pdf"
    files["image_pdf"].write_bytes(make_pdf([[]]))
    files["unsupported"] = tmp_path / "sheet.ods"
    files["unsupported"].write_bytes(b"PK\x03\x04 not really")
    return files
