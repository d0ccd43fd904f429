"""The Celery worker as a real process (``python -m services.worker``) on each broker.

Embedded profile: kombu's SQLite transport under the data dir (solo pool). Server
profile: the real Redis at 127.0.0.1:6379, a random DB number and per-run queue names
so parallel runs never share work (prefork pool). The gateway app sends the tasks
(its default, Celery-backed queue), so the path is upload -> broker -> worker -> SQL.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.db import migrate
from services.gateway.app import create_app
from services.settings import Settings
from tests.support import REPO_ROOT, corpus_dir, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ENCLAVE_DATA_DIR": str(settings.data_dir),
            "ENCLAVE_INGEST_QUEUE": settings.ingest_queue,
            "ENCLAVE_DELETE_QUEUE": settings.delete_queue,
            "ENCLAVE_ADMIN_PASSWORD": "worker-test-pw",
        }
    )
    for name in ("broker_url", "result_backend"):
        if getattr(settings, name):
            env[f"ENCLAVE_{name.upper()}"] = getattr(settings, name)
    return env


@pytest.fixture(params=["sqlite", "redis"])
def worker_settings(request, tmp_path) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=tmp_path / "data",
        admin_password="worker-test-pw",
        ingest_queue=f"ingest-{suffix}",
        delete_queue=f"delete-{suffix}",
    )
    if request.param == "redis":
        request.getfixturevalue("redis_available")
        url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
        settings = settings.model_copy(update={"broker_url": url, "result_backend": url})
    return settings


def test_document_goes_through_a_real_worker_process_to_done_and_is_deleted(
    worker_settings, tmp_path
):
    migrate(worker_settings.resolved_database_url)
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "services.worker", "--loglevel", "INFO"],
        cwd=REPO_ROOT,
        env=_env(worker_settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        from services.db import make_engine, session_factory
        from services.gateway.auth_service import ensure_admin

        ensure_admin(
            session_factory(make_engine(worker_settings.resolved_database_url)), "worker-test-pw"
        )
        with TestClient(create_app(worker_settings)) as client:
            token = client.post(
                "/api/auth/login", json={"username": "admin", "password": "worker-test-pw"}
            )
            client.cookies.clear()
            headers = {"Authorization": f"Bearer {token.json()['token']}"}
            content = (corpus_dir() / "docs" / "workplace" / "transit-benefit.md").read_bytes()
            response = client.post(
                "/api/documents", files={"file": ("transit-benefit.md", content)}, headers=headers
            )
            assert response.status_code == 202, response.text
            ids = response.json()

            def job_state(job_id: str) -> dict | None:
                assert worker.poll() is None, Path(log.name).read_text()[-3000:]
                job = client.get(f"/api/jobs/{job_id}", headers=headers).json()
                return job if job["state"] in ("done", "failed") else None

            job = wait_for(
                lambda: job_state(ids["job_id"]), timeout=150, interval=0.5, what="the ingest job"
            )
            assert job["state"] == "done", job
            assert job["progress"] == 1.0
            doc = client.get(f"/api/documents/{ids['document_id']}", headers=headers).json()
            assert doc["status"] == "ready" and doc["chunk_count"] > 0
            assert client.get("/readyz", headers=headers).json()["checks"]["queue"] == {"ok": True}

            deletion = client.delete(f"/api/documents/{ids['document_id']}", headers=headers).json()
            job = wait_for(
                lambda: job_state(deletion["job_id"]),
                timeout=60,
                interval=0.5,
                what="the delete job",
            )
            assert job["state"] == "done", job
            assert (
                client.get(f"/api/documents/{ids['document_id']}", headers=headers).status_code
                == 404
            )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
