"""``enclave backup`` then ``enclave restore`` into a fresh data directory: same answers.

Documents (one restricted to a group) are ingested on the embedded profile, questions
are asked as an admin and as a group member, the CLI writes a backup, the CLI restores it
into a new data directory, and a gateway over the restored copy gives identical search
results, the same originals and the same accounts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.components import create_pipeline
from services.db import Document, make_engine, migrate, session_factory
from services.gateway.app import create_app
from services.gateway.auth_service import ensure_admin
from services.settings import Settings
from services.worker.inline import InlineJobQueue
from services.worker.jobs import JobRunner
from tests.support import REPO_ROOT, corpus_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "backup-pass-1"
QUESTIONS = [
    "How do I file a travel voucher?",
    "What does the mutual NDA say about confidential information?",
    "transit benefit monthly limit",
]


def _login(client: TestClient, username: str, password: str) -> dict:
    response = client.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _answers(client: TestClient, headers: dict) -> list[list[tuple]]:
    results = []
    for question in QUESTIONS:
        response = client.post("/api/search", json={"query": question, "k": 5}, headers=headers)
        assert response.status_code == 200, response.text
        hits = response.json()["results"]
        results.append([(h["chunk_id"], h["document_id"], h["text"], h["score"]) for h in hits])
    return results


def _cli(settings: Settings, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), ENCLAVE_DATA_DIR=str(settings.data_dir))
    env.pop("ENCLAVE_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_backup_restores_into_a_fresh_data_dir_with_identical_search_results(tmp_path):
    original = Settings(data_dir=tmp_path / "original", admin_password=PASSWORD)
    migrate(original.resolved_database_url)
    sessions = session_factory(make_engine(original.resolved_database_url))
    ensure_admin(sessions, PASSWORD)
    queue = InlineJobQueue(JobRunner(sessions, create_pipeline(original)))
    docs = corpus_dir() / "docs"
    with TestClient(create_app(original, job_queue=queue)) as client:
        admin = _login(client, "admin", PASSWORD)
        client.post("/api/admin/groups", json={"name": "legal"}, headers=admin)
        user = {"username": "lena", "password": "lena-pass-1", "role": "employee"}
        assert (
            client.post(
                "/api/admin/users", json={**user, "groups": ["legal"]}, headers=admin
            ).status_code
            == 201
        )
        uploads = {}
        for name, groups in (
            ("contracts/mutual-nda.md", "legal"),
            ("workplace/transit-benefit.md", ""),
            ("expenses/purchase-requests.md", ""),
        ):
            response = client.post(
                "/api/documents",
                files={"file": (name.split("/")[1], (docs / name).read_bytes())},
                data={"groups": groups},
                headers=admin,
            )
            assert response.status_code == 202, response.text
            uploads[name] = response.json()["document_id"]
        queue.drain()
        before_admin = _answers(client, admin)
        before_lena = _answers(client, _login(client, "lena", "lena-pass-1"))
    queue.close()
    assert any(hits for hits in before_admin)

    backup_dir = tmp_path / "backup"
    done = _cli(original, "backup", str(backup_dir))
    assert done.returncode == 0, done.stderr
    refused = _cli(original, "restore", str(backup_dir))  # into the non-empty original
    assert refused.returncode == 1 and "needs an empty Enclave" in refused.stderr

    restored = Settings(data_dir=tmp_path / "restored")
    done = _cli(restored, "restore", str(backup_dir))
    assert done.returncode == 0, done.stderr
    with TestClient(create_app(restored, job_queue=InlineJobQueue(None))) as client:  # type: ignore[arg-type]
        admin = _login(client, "admin", PASSWORD)
        assert _answers(client, admin) == before_admin
        assert _answers(client, _login(client, "lena", "lena-pass-1")) == before_lena
        listed = {
            d["id"]: d["status"]
            for d in client.get("/api/documents", headers=admin).json()["documents"]
        }
        assert listed == dict.fromkeys(uploads.values(), "ready")
    restored_sessions = session_factory(make_engine(restored.resolved_database_url))
    with restored_sessions() as session:
        for name, document_id in uploads.items():
            stored = Path(session.get(Document, document_id).stored_path)
            assert stored.parent == restored.uploads_dir.resolve()
            assert stored.read_bytes() == (docs / name).read_bytes()
