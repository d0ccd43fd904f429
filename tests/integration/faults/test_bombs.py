"""Decompression bombs through a real worker: each fails its job with a message, the worker
lives and the next document is ingested."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.settings import Settings
from tests.bombs import docx_bomb, pdf_bomb
from tests.integration.faults.stack import (
    admin_headers,
    corpus_bytes,
    prepare_database,
    start_worker,
    store_counts,
    wait_job,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bombs_fail_their_jobs_and_the_worker_lives(tmp_path):
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=tmp_path / "data",
        ingest_queue=f"ingest-{suffix}",
        delete_queue=f"delete-{suffix}",
        parse_memory_mb=128,
        parse_time_limit_s=120,
    )
    prepare_database(settings)
    files = {
        "report.docx": docx_bomb(tmp_path / "report.docx", expanded_mb=300).read_bytes(),
        "scan.pdf": pdf_bomb(tmp_path / "scan.pdf", expanded_mb=300).read_bytes(),
        "transit-benefit.md": corpus_bytes("workplace/transit-benefit.md"),
    }
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        with TestClient(create_app(settings)) as client:
            headers = admin_headers(client)
            uploaded = {}
            for name, content in files.items():
                response = client.post(
                    "/api/documents", files={"file": (name, content)}, headers=headers
                )
                assert response.status_code == 202, response.text
                uploaded[name] = response.json()
            for name in ("report.docx", "scan.pdf"):
                job = wait_job(client, headers, uploaded[name]["job_id"], ("done", "failed"))
                assert job["state"] == "failed", (job, worker.output())
                assert name in job["error"] and "decompression bomb" in job["error"]
                assert store_counts(settings, uploaded[name]["document_id"]) == {
                    "sql": 0,
                    "lexical": 0,
                    "vector": 0,
                }
            job = wait_job(
                client, headers, uploaded["transit-benefit.md"]["job_id"], ("done", "failed")
            )
            assert job["state"] == "done", job
            assert worker.process.poll() is None, worker.output()
    finally:
        worker.stop()
