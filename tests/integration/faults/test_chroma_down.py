"""Chroma server unreachable: /readyz says so, an upload waits (queued, not failed, not
done) and is ingested once Chroma is back, with every chunk in every store once."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.settings import Settings
from tests.integration.faults.stack import (
    admin_headers,
    corpus_bytes,
    job,
    prepare_database,
    start_chroma,
    start_worker,
    store_counts,
    wait_job,
)
from tests.support import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_upload_waits_for_chroma_and_nothing_is_marked_done_meanwhile(tmp_path):
    chroma_port = free_port()
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=tmp_path / "data",
        ingest_queue=f"ingest-{suffix}",
        delete_queue=f"delete-{suffix}",
        vector_store="server",
        chroma_port=chroma_port,
        chroma_collection=f"faults_{suffix}",
    )
    prepare_database(settings)
    chroma_dir, chroma_log = tmp_path / "chroma", tmp_path / "chroma.log"
    chroma = start_chroma(chroma_dir, chroma_port, chroma_log)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        with TestClient(create_app(settings)) as client:
            headers = admin_headers(client)
            assert client.get("/readyz", headers=headers).json()["checks"]["vector_store"] == {
                "ok": True
            }
            chroma.kill()

            ready = client.get("/readyz", headers=headers)
            assert ready.status_code == 503
            assert "vector_store" in ready.json()["failed"]
            assert "Chroma" in ready.json()["checks"]["vector_store"]["error"]

            response = client.post(
                "/api/documents",
                files={
                    "file": ("transit-benefit.md", corpus_bytes("workplace/transit-benefit.md"))
                },
                headers=headers,
            )
            assert response.status_code == 202, response.text
            ids = response.json()

            def consistent_wait() -> dict | None:
                """The job and its document while the worker retries: each retry claims the
                job and marks the document processing for a moment, so the two are read
                job, document, job, and accepted only when both job reads say it waits."""
                before = job(client, headers, ids["job_id"])
                doc = client.get(f"/api/documents/{ids['document_id']}", headers=headers).json()
                after = job(client, headers, ids["job_id"])
                for body in (before, after):
                    assert body["state"] in ("queued", "running"), body
                assert doc["status"] in ("queued", "processing"), doc
                assert doc["chunk_count"] == 0, doc
                waits = all(b["stage"] == "waiting for the stores" for b in (before, after))
                return (waits and doc["status"] == "queued" and after) or None

            waiting = wait_for(
                consistent_wait,
                timeout=180,
                interval=0.3,
                what="the job and its document to wait for the vector store",
            )
            assert waiting["state"] == "queued" and "cannot be reached" in waiting["error"]

            chroma = start_chroma(chroma_dir, chroma_port, chroma_log)
            finished = wait_job(client, headers, ids["job_id"], ("done", "failed"))
            assert finished["state"] == "done", (finished, worker.output())
            assert finished["error"] is None
            doc = client.get(f"/api/documents/{ids['document_id']}", headers=headers).json()
            assert doc["status"] == "ready"
            counts = store_counts(settings, ids["document_id"])
            assert counts == dict.fromkeys(("sql", "lexical", "vector"), doc["chunk_count"])
            assert client.get("/readyz", headers=headers).json()["checks"]["vector_store"] == {
                "ok": True
            }
    finally:
        worker.stop()
        chroma.stop()
