"""The server profile as real local processes, wired as compose.yaml wires the containers.

PostgreSQL (SQL and the lexical index), Redis (broker), a ``chroma run`` server, two
workers, two gateways and an OpenAI-compatible LLM endpoint (the tests' fake, to keep the
run light; the real llm_server has its own tests). The flow crosses them: documents are
uploaded on gateway A, ingested by both workers, searched and asked about on gateway B,
deleted on B and gone from A.
"""

from __future__ import annotations

import random
import uuid

import httpx
import pytest

from services.settings import Settings
from tests.integration.faults.stack import (
    ADMIN_PASSWORD,
    Child,
    admin_headers,
    prepare_database,
    start_chroma,
    start_fake_llm,
    start_gateway,
    start_worker,
    upload_corpus,
)
from tests.support import free_port, require_service, throwaway_postgres_database, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS = [
    "contracts/mutual-nda.md",
    "hiring/gsa-details.md",
    "workplace/transit-benefit.md",
    "expenses/purchase-requests.md",
]


def test_upload_on_one_gateway_ingest_on_two_workers_answer_on_the_other(tmp_path):
    require_service("Redis", "127.0.0.1", 6379)
    children: list[Child] = []
    with throwaway_postgres_database("enclave_topology") as database_url:
        suffix = uuid.uuid4().hex[:8]
        redis_url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
        llm_port = free_port()
        base = Settings(
            data_dir=tmp_path / "shared",
            database_url=database_url,
            broker_url=redis_url,
            result_backend=redis_url,
            ingest_queue=f"ingest-{suffix}",
            delete_queue=f"delete-{suffix}",
            vector_store="server",
            chroma_port=free_port(),
            chroma_collection=f"topology_{suffix}",
            lexical_backend="postgres",
            llm_base_url=f"http://127.0.0.1:{llm_port}/v1",
            admin_password=ADMIN_PASSWORD,
        )
        prepare_database(base)
        try:
            children.append(
                start_chroma(tmp_path / "chroma", base.chroma_port, tmp_path / "chroma.log")
            )
            children.append(start_fake_llm(llm_port, tmp_path / "llm.log"))
            workers = [
                start_worker(
                    base.model_copy(update={"data_dir": tmp_path / f"worker{i}"}),
                    tmp_path / f"worker{i}.log",
                )
                for i in (1, 2)
            ]
            children += workers
            gateways = []
            for name in ("a", "b"):
                settings = base.model_copy(
                    update={"data_dir": tmp_path / f"gateway_{name}", "port": free_port()}
                )
                children.append(start_gateway(settings, tmp_path / f"gateway_{name}.log"))
                gateways.append(
                    httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=180)
                )
            a, b = gateways
            headers_a, headers_b = admin_headers(a), admin_headers(b)
            for gateway in gateways:
                ready = gateway.get("/readyz")
                assert ready.status_code == 200, ready.text
            wait_for(
                lambda: all("ready" in w.output() for w in workers),
                timeout=120,
                interval=0.5,
                what="both workers to consume",
            )

            uploads = upload_corpus(a, headers_a, DOCS)

            def finished(job_id: str) -> dict | None:
                body = b.get(f"/api/jobs/{job_id}", headers=headers_b).json()
                return body if body["state"] in ("done", "failed") else None

            for upload in uploads:
                job = wait_for(
                    lambda job_id=upload["job_id"]: finished(job_id),
                    timeout=300,
                    interval=0.5,
                    what="ingest on the workers",
                )
                assert job["state"] == "done", job
            ran = [w.output().count("succeeded in") for w in workers]
            assert all(count > 0 for count in ran), f"jobs per worker: {ran}"

            hits = b.post(
                "/api/search", json={"query": "transit benefit subsidy", "k": 3}, headers=headers_b
            ).json()["results"]
            transit = uploads[2]["document_id"]
            assert hits and hits[0]["document_id"] == transit, hits
            answer = b.post(
                "/api/chat", json={"message": "What is the transit benefit?"}, headers=headers_b
            ).json()
            assert answer["answer"], answer
            assert transit in {c["document_id"] for c in answer["citations"]}, answer

            deletion = b.delete(f"/api/documents/{transit}", headers=headers_b).json()
            wait_for(
                lambda: (
                    a.get(f"/api/jobs/{deletion['job_id']}", headers=headers_a).json()["state"]
                    == "done"
                ),
                timeout=120,
                interval=0.5,
                what="the delete job",
            )
            again = a.post(
                "/api/search", json={"query": "transit benefit subsidy", "k": 5}, headers=headers_a
            ).json()["results"]
            assert transit not in {hit["document_id"] for hit in again}
        finally:
            for child in reversed(children):
                child.stop()
