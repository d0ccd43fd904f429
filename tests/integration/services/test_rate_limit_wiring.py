"""Chat and upload budgets are enforced per user with 429 + Retry-After (issue 12)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.db import make_engine, migrate, session_factory
from services.gateway.app import create_app
from services.gateway.auth_service import ensure_admin
from services.settings import Settings

pytestmark = [pytest.mark.integration]


class AcceptingQueue:
    """Takes jobs and runs none: these tests are about admission, not ingest."""

    def enqueue(self, kind: str, job_id: str) -> None: ...

    def check(self) -> None: ...


def test_second_upload_and_chat_within_a_minute_are_429(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        frontend_dir=tmp_path / "none",
        uploads_per_minute=1,
        chat_requests_per_minute=1,
        llm_base_url="http://127.0.0.1:9/v1",
    )
    migrate(settings.resolved_database_url)
    ensure_admin(session_factory(make_engine(settings.resolved_database_url)), "admin-pass-1")
    with TestClient(create_app(settings, job_queue=AcceptingQueue())) as client:
        token = client.post(
            "/api/auth/login", json={"username": "admin", "password": "admin-pass-1"}
        ).json()["token"]
        client.cookies.clear()
        headers = {"Authorization": f"Bearer {token}"}
        files = {"file": ("a.md", b"# A\n\ntext")}
        assert client.post("/api/documents", files=files, headers=headers).status_code == 202
        files = {"file": ("b.md", b"# B\n\nother text")}
        second = client.post("/api/documents", files=files, headers=headers)
        assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1
        assert "uploads" in second.json()["error"]["message"]
        client.post("/api/chat", json={"message": "   "}, headers=headers)  # spends the budget
        chat = client.post("/api/chat", json={"message": "hello"}, headers=headers)
        assert chat.status_code == 429 and "chat" in chat.json()["error"]["message"]
