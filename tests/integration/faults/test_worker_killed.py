"""A worker SIGKILLed mid-ingest: the job is picked up again and the document ends complete.

On both brokers: the embedded SQLite transport (which never redelivers a message whose
worker died: the new worker's start-up sweep re-enqueues it) and Redis (whose unacked
message and the sweeper's re-enqueue both arrive: the job's compare-and-set claim runs it
once). Nothing lost: the document is ready with every chunk in every store; nothing
duplicated: each store holds exactly the chunk count the SQL row records.
"""

from __future__ import annotations

import random
import uuid

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.settings import Settings
from tests.integration.faults.stack import (
    admin_headers,
    job,
    prepare_database,
    start_worker,
    store_counts,
    upload_corpus,
    wait_job,
)
from tests.support import require_service, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(params=["sqlite", "redis"])
def fault_settings(request, tmp_path) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    fields: dict = dict(
        data_dir=tmp_path / "data",
        ingest_queue=f"ingest-{suffix}",
        delete_queue=f"delete-{suffix}",
        job_lease_s=12.0,
        sweep_interval_s=1.0,
    )
    if request.param == "redis":
        require_service("Redis", "127.0.0.1", 6379)
        url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
        fields.update(broker_url=url, result_backend=url)
    return Settings(**fields)


def test_worker_killed_mid_ingest_leaves_the_document_complete_once(fault_settings, tmp_path):
    prepare_database(fault_settings)
    log_path = tmp_path / "worker.log"
    first = start_worker(fault_settings, log_path)
    second = None
    try:
        with TestClient(create_app(fault_settings)) as client:
            headers = admin_headers(client)
            names = ["contracts/cloud-service-agreement.md", "hiring/leaving-tts.md"]
            uploads = upload_corpus(client, headers, names)

            wait_for(
                lambda: (
                    first.process.poll() is None
                    and job(client, headers, uploads[0]["job_id"])["state"] == "running"
                ),
                timeout=120,
                interval=0.05,
                what="the first job to start running",
            )
            first.kill()
            assert job(client, headers, uploads[0]["job_id"])["state"] == "running"

            second = start_worker(fault_settings, log_path)
            for upload in uploads:
                finished = wait_job(client, headers, upload["job_id"], ("done", "failed"))
                assert finished["state"] == "done", (finished, second.output())
                assert finished["error"] is None
                doc = client.get(f"/api/documents/{upload['document_id']}", headers=headers).json()
                assert doc["status"] == "ready" and doc["chunk_count"] > 0
                counts = store_counts(fault_settings, upload["document_id"])
                assert counts == {
                    "sql": doc["chunk_count"],
                    "lexical": doc["chunk_count"],
                    "vector": doc["chunk_count"],
                }, counts
            hits = client.post(
                "/api/search", json={"query": "service level credits", "k": 3}, headers=headers
            ).json()["results"]
            assert hits, "the re-run document is searchable"
    finally:
        first.stop()
        if second is not None:
            second.stop()
