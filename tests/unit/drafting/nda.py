"""Test templates built from the shared corpus's real Mutual NDA (Common Paper, CC BY 4.0)."""

from __future__ import annotations

from drafting.markdown_io import markdown_blocks, markdown_to_docx
from tests.support import require_corpus

NON_SOLICIT = (
    "{% clause non_solicit %}\n"
    "12. **Non-Solicitation**. For {{non_solicit_months: int[1..24]}} months after the Effective "
    "Date, neither party will solicit for employment any employee of the other party with whom "
    "it had contact in connection with the Purpose.\n"
    "{% end %}\n"
)
VALID_VALUES = {
    "effective_date": "2026-03-01",
    "governing_law": "Delaware",
    "jurisdiction": "courts located in New Castle, DE",
    "party_a": "Acme Corp",
    "party_b": "Globex LLC",
}


def nda_source() -> str:
    return (require_corpus() / "docs" / "contracts" / "mutual-nda.md").read_text(encoding="utf-8")


def nda_template() -> str:
    """The corpus NDA with its blanks turned into typed fields and an optional clause added."""
    text = nda_source()
    replacements = {
        "[Today’s date]": "{{effective_date: date}}",
        "Governing Law: [Fill in state]": "Governing Law: {{governing_law: choice[Delaware, New York]}}",
        "Jurisdiction: [Fill in city or county and state, i.e. “courts located in New Castle, DE”]": "Jurisdiction: {{jurisdiction}}",
        "| Company | | |": "| Company | {{party_a}} | {{party_b}} |",
    }
    for old, new in replacements.items():
        assert old in text, f"the corpus NDA changed: {old!r} not found"
        text = text.replace(old, new)
    footer = "\nCommon Paper Mutual Non-Disclosure Agreement [Version 1.0]"
    assert footer in text
    return text.replace(footer, "\n" + NON_SOLICIT + footer.lstrip("\n"), 1)


def nda_docx_template() -> bytes:
    """The same template as a DOCX (Heading and List Number styles)."""
    return markdown_to_docx(markdown_blocks(nda_template()))
