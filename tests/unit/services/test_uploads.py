"""Upload file names: path tricks never reach the file system; display names stay readable."""

from __future__ import annotations

import pytest

from services.gateway.uploads import file_extension, sanitize_filename


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd.md", "passwd.md"),
        ("/etc/passwd.md", "passwd.md"),
        ("C:\\Users\\bob\\report.pdf", "report.pdf"),
        ("..\\..\\windows\\win.ini.md", "win.ini.md"),
        ("evil\x00name.pdf", "evilname.pdf"),
        ("  .hidden.md", "hidden.md"),
        ("Benefits Guide (2024).pdf", "Benefits Guide (2024).pdf"),
        ("résumé.docx", "résumé.docx"),
        ("a|b<c>d.md", "a_b_c_d.md"),
        ("..", "upload"),
        ("", "upload"),
        (None, "upload"),
    ],
)
def test_sanitize_filename(raw, expected):
    assert sanitize_filename(raw) == expected


def test_sanitized_names_have_no_separators_and_are_bounded():
    name = sanitize_filename("../" * 50 + "x" * 500 + ".pdf")
    assert "/" not in name and "\\" not in name and len(name) <= 200
    assert file_extension(name) == ".pdf"


def test_file_extension_is_lower_case():
    assert file_extension("REPORT.PDF") == ".pdf"
    assert file_extension("README") == ""
