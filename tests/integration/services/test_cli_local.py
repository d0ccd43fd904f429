"""``enclave migrate`` and ``enclave ingest --local``: no servers, same tables and stores."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.integration.services.helpers import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cli(data_dir, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENCLAVE_DATA_DIR": str(data_dir)}
    env.pop("ENCLAVE_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          timeout=180, cwd=REPO_ROOT, env=env)


def test_migrate_then_local_ingest_writes_documents_and_chunks(tmp_path):
    data_dir = tmp_path / "data"
    migrated = _cli(data_dir, "migrate")
    assert migrated.returncode == 0 and "database at head" in migrated.stdout, migrated.stderr
    note = tmp_path / "notes"
    note.mkdir()
    (note / "parking.md").write_text("# Parking\n\nStaff parking is in garage B; permits renew every January.")
    (note / "empty.md").write_text("")
    result = _cli(data_dir, "ingest", "--local", str(note))
    assert result.returncode == 1, result.stderr  # the empty file is refused
    assert "empty.md: rejected (the file is empty)" in result.stderr
    assert "parking.md" in result.stderr and "100/100" in result.stderr
    with sqlite3.connect(data_dir / "enclave.db") as connection:
        status, chunks = connection.execute("SELECT status, chunk_count FROM documents").fetchone()
        stored = connection.execute("SELECT count(*) FROM chunks").fetchone()[0]
    assert status == "ready" and chunks == stored >= 1
