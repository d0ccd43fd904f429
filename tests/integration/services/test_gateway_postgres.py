"""The gateway on PostgreSQL (server profile SQL): the same API flow as on SQLite.

Jobs run through ``InlineJobQueue`` (not about the queue); the LLM is the loopback
stand-in of fake_llm.py. Skips when PostgreSQL is unreachable.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.components import create_pipeline
from services.db import make_engine, migrate, session_factory
from services.gateway.app import create_app
from services.gateway.auth_service import ensure_admin
from services.settings import Settings
from services.worker.inline import InlineJobQueue
from services.worker.jobs import JobRunner
from tests.integration.services.fake_llm import FakeLLMServer
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_upload_search_chat_and_delete_on_postgresql(postgres_url, tmp_path):
    migrate(postgres_url)
    with FakeLLMServer(free_port()) as llm:
        settings = Settings(
            data_dir=tmp_path,
            database_url=postgres_url,
            admin_password="pg-admin-pw",
            llm_base_url=llm.base_url,
            answer_tokens=32,
            context_tokens=1200,
        )
        sessions = session_factory(make_engine(postgres_url))
        ensure_admin(sessions, settings.admin_password)
        queue = InlineJobQueue(JobRunner(sessions, create_pipeline(settings)))
        with TestClient(create_app(settings, job_queue=queue)) as client:
            token = client.post(
                "/api/auth/login", json={"username": "admin", "password": "pg-admin-pw"}
            ).json()
            client.cookies.clear()
            headers = {"Authorization": f"Bearer {token['token']}"}
            assert (
                client.post(
                    "/api/admin/groups", json={"name": "legal"}, headers=headers
                ).status_code
                == 201
            )
            content = b"# Parking\n\nStaff parking is in garage B. Permits renew every January at the front desk."
            response = client.post(
                "/api/documents",
                files={"file": ("parking.md", content)},
                data={"groups": "legal"},
                headers=headers,
            )
            assert response.status_code == 202, response.text
            ids = response.json()
            queue.drain()
            assert (
                client.get(f"/api/jobs/{ids['job_id']}", headers=headers).json()["state"] == "done"
            )
            doc = client.get(f"/api/documents/{ids['document_id']}", headers=headers).json()
            assert doc["groups"] == ["legal"] and doc["status"] == "ready"
            results = client.post(
                "/api/search", json={"query": "garage permits"}, headers=headers
            ).json()["results"]
            assert results[0]["document_id"] == ids["document_id"]
            chat = client.post(
                "/api/chat", json={"message": "Where is staff parking?"}, headers=headers
            ).json()
            assert chat["citations"][0]["document_id"] == ids["document_id"]
            stored = client.get(
                f"/api/conversations/{chat['conversation_id']}", headers=headers
            ).json()
            assert stored["messages"][1]["citations"] == chat["citations"]
            audit = client.get("/api/admin/audit", headers=headers).json()["entries"]
            assert {e["action"] for e in audit} == {"search", "chat"}
            duplicate = client.post(
                "/api/documents", files={"file": ("again.md", content)}, headers=headers
            )
            assert duplicate.status_code == 200 and duplicate.json()["duplicate"] is True
            deletion = client.delete(f"/api/documents/{ids['document_id']}", headers=headers).json()
            queue.drain()
            assert (
                client.get(f"/api/jobs/{deletion['job_id']}", headers=headers).json()["state"]
                == "done"
            )
            assert (
                client.get(f"/api/documents/{ids['document_id']}", headers=headers).status_code
                == 404
            )
            metrics = client.get("/metrics", headers=headers).text
            assert 'enclave_jobs{kind="delete",state="done"} 1.0' in metrics
        queue.close()
