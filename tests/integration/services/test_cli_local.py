"""``enclave migrate`` and ``enclave ingest --local``: no servers, same tables and stores.

Run in this process through ``services.cli.main`` (the console script's entry point) to
reuse the already imported libraries; the subprocess path of the CLI is covered by the
ingest/ask tests in test_gateway_api.py and by the e2e test.
"""

from __future__ import annotations

import sqlite3

import pytest

from services.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_migrate_then_local_ingest_writes_documents_and_chunks(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("ENCLAVE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("ENCLAVE_DATABASE_URL", raising=False)
    assert main(["migrate"]) == 0
    assert "database at head" in capsys.readouterr().out
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "parking.md").write_text(
        "# Parking\n\nStaff parking is in garage B; permits renew every January."
    )
    (notes / "empty.md").write_text("")
    (notes / "tool.exe").write_bytes(b"MZ")
    assert main(["ingest", "--local", "--poll", "0.1", str(notes)]) == 1  # two files are refused
    err = capsys.readouterr().err
    assert "empty.md: rejected (the file is empty)" in err
    assert "tool.exe: rejected (file type not supported; supported: " in err
    assert "parking.md" in err and "100/100" in err
    with sqlite3.connect(data_dir / "enclave.db") as connection:
        status, chunks = connection.execute("SELECT status, chunk_count FROM documents").fetchone()
        stored = connection.execute("SELECT count(*) FROM chunks").fetchone()[0]
    assert status == "ready" and chunks == stored >= 1
