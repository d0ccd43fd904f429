"""``enclave draft``: a template file and --set values to a DOCX, problems listed with exit code 2."""

from __future__ import annotations

import io
import json

from docx import Document

from services.cli import main
from tests.unit.drafting.nda import VALID_VALUES, nda_template


def test_draft_writes_a_docx_and_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENCLAVE_DATA_DIR", str(tmp_path / "data"))
    template = tmp_path / "nda.md"
    template.write_text(nda_template(), encoding="utf-8")
    out, report = tmp_path / "out.docx", tmp_path / "report.json"
    sets = [f"--set={key}={value}" for key, value in VALID_VALUES.items()]
    argv = [
        "draft",
        str(template),
        *sets,
        "--include",
        "non_solicit",
        "--set",
        "non_solicit_months=9",
    ]
    assert main([*argv, "-o", str(out), "--report", str(report)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = "\n".join(p.text for p in Document(io.BytesIO(out.read_bytes())).paragraphs)
    assert "For 9 months after the Effective Date" in text
    clauses = {c["name"]: c for c in json.loads(report.read_text())["clauses"]}
    assert clauses["non_solicit"]["changed"] and not clauses["exceptions"]["changed"]


def test_draft_lists_every_problem_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENCLAVE_DATA_DIR", str(tmp_path / "data"))
    template = tmp_path / "nda.md"
    template.write_text(nda_template(), encoding="utf-8")
    out = tmp_path / "out.docx"
    argv = ["draft", str(template), "--set", "effective_date=soon", "--set", "governing_law=Ohio"]
    assert main([*argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    for field in ("effective_date", "governing_law", "jurisdiction", "party_a", "party_b"):
        assert f"  {field}: " in err
    assert not out.exists()
    assert main(["draft", str(tmp_path / "x.txt"), "--set", "novalue", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "expected key=value" in err and "a template is a .md or .docx file" in err
