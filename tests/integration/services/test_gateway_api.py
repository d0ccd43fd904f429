"""The gateway's HTTP API against an app built by ``create_app`` on a temp data dir.

Real SQLite, real ingest pipeline (Chroma + FTS5 + MiniLM), real HTTP (httpx via
Starlette's TestClient). Jobs run through ``InlineJobQueue`` (the worker's JobRunner on
a thread, no broker): these tests are about the API, the queue has its own tests in
test_worker_process.py. The LLM is the loopback stand-in of fake_llm.py (the real model
is exercised by tests/e2e/platform).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.components import create_pipeline
from services.db import Chunk, make_engine, migrate, session_factory
from services.gateway.app import create_app
from services.gateway.auth_service import ensure_admin
from services.settings import Settings
from services.worker.inline import InlineJobQueue
from services.worker.jobs import JobRunner
from tests.integration.services.fake_llm import FakeLLMServer
from tests.support import corpus_dir, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN_PASSWORD = "admin-pass-123"
MAX_UPLOAD = 300_000


@dataclass
class Stack:
    client: TestClient
    queue: InlineJobQueue
    settings: Settings
    sessions: object
    llm: FakeLLMServer
    admin: dict


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    data_dir = tmp_path_factory.mktemp("gateway")
    with FakeLLMServer(free_port()) as llm:
        settings = Settings(
            data_dir=data_dir,
            admin_password=ADMIN_PASSWORD,
            max_upload_bytes=MAX_UPLOAD,
            llm_base_url=llm.base_url,
            answer_tokens=64,
            context_tokens=1500,
            frontend_dir=data_dir / "frontend",
        )
        (data_dir / "frontend").mkdir()
        (data_dir / "frontend" / "index.html").write_text("<html>enclave portal</html>")
        migrate(settings.resolved_database_url)
        sessions = session_factory(make_engine(settings.resolved_database_url))
        ensure_admin(sessions, settings.admin_password)
        queue = InlineJobQueue(JobRunner(sessions, create_pipeline(settings)))
        with TestClient(create_app(settings, job_queue=queue)) as client:
            admin = login(client, "admin", ADMIN_PASSWORD)
            _create(client, admin, "/api/admin/groups", {"name": "hr"})
            _create(
                client,
                admin,
                "/api/admin/users",
                {
                    "username": "hannah",
                    "password": "hannah-pass",
                    "role": "employee",
                    "groups": ["hr"],
                },
            )
            _create(
                client,
                admin,
                "/api/admin/users",
                {"username": "eve", "password": "eve-pass-1", "role": "employee", "groups": []},
            )
            yield Stack(client, queue, settings, sessions, llm, admin)
        queue.close()


def _create(client: TestClient, headers: dict, path: str, body: dict) -> dict:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def login(client: TestClient, username: str, password: str) -> dict:
    response = client.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()  # the jar would authenticate every later request; tests say who calls
    return {"Authorization": f"Bearer {response.json()['token']}"}


def upload(
    stack: Stack, name: str, content: bytes, headers: dict | None = None, **fields
) -> tuple[int, dict]:
    response = stack.client.post(
        "/api/documents",
        files={"file": (name, content)},
        data=fields,
        headers=headers or stack.admin,
    )
    return response.status_code, response.json()


def finished_job(stack: Stack, job_id: str) -> dict:
    stack.queue.drain()
    response = stack.client.get(f"/api/jobs/{job_id}", headers=stack.admin)
    assert response.status_code == 200
    return response.json()


def store_counts(stack: Stack, document_id: str) -> dict[str, int]:
    """Chunks of a document in each of SQL, FTS5 and Chroma."""
    with stack.sessions() as session:
        sql = session.scalar(
            select(func.count()).select_from(Chunk).where(Chunk.document_id == document_id)
        )
    pipeline = create_pipeline(stack.settings)
    return {
        "sql": sql,
        "lexical": len(pipeline.lexical_index.document_chunk_ids(document_id)),
        "vector": len(pipeline.vector_store.document_chunk_ids(document_id)),
    }


def corpus_file(relative: str) -> bytes:
    return (corpus_dir() / "docs" / relative).read_bytes()


@pytest.fixture(scope="module")
def transit(stack) -> dict:
    """A public document, ingested."""
    status, body = upload(stack, "transit-benefit.md", corpus_file("workplace/transit-benefit.md"))
    assert status == 202, body
    assert finished_job(stack, body["job_id"])["state"] == "done"
    return body


@pytest.fixture(scope="module")
def promotions_hr(stack) -> dict:
    """A document only the hr group may read."""
    status, body = upload(
        stack,
        "promotions.md",
        corpus_file("hiring/promotions.md"),
        groups="hr",
        title="Promotions at TTS",
    )
    assert status == 202, body
    assert finished_job(stack, body["job_id"])["state"] == "done"
    return body


# --- auth -------------------------------------------------------------------------------


def test_unauthenticated_requests_get_401(stack):
    for method, path in [
        ("get", "/api/documents"),
        ("post", "/api/search"),
        ("get", "/api/me"),
        ("get", "/api/admin/users"),
    ]:
        response = getattr(stack.client, method)(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"


def test_login_gives_a_token_and_a_cookie(stack):
    response = stack.client.post(
        "/api/auth/login", json={"username": "hannah", "password": "hannah-pass"}
    )
    stack.client.cookies.clear()
    assert response.status_code == 200
    assert "enclave_session" in response.cookies
    fresh = TestClient(stack.client.app)
    me = fresh.get("/api/me", cookies={"enclave_session": response.cookies["enclave_session"]})
    assert me.json()["username"] == "hannah" and me.json()["groups"] == ["hr"]
    bearer = fresh.get("/api/me", headers={"Authorization": f"Bearer {response.json()['token']}"})
    assert bearer.json()["role"] == "employee"


def test_wrong_password_and_bad_token_are_401(stack):
    response = stack.client.post("/api/auth/login", json={"username": "admin", "password": "nope"})
    assert response.status_code == 401
    assert (
        stack.client.get("/api/me", headers={"Authorization": "Bearer forged"}).status_code == 401
    )


def test_login_validation_error_is_422_in_error_shape(stack):
    response = stack.client.post("/api/auth/login", json={"username": "admin"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


# --- admin ------------------------------------------------------------------------------


def test_employee_calling_admin_endpoints_gets_403(stack):
    eve = login(stack.client, "eve", "eve-pass-1")
    for method, path, body in [
        ("get", "/api/admin/users", None),
        ("post", "/api/admin/groups", {"name": "x"}),
        ("get", "/api/admin/audit", None),
    ]:
        response = getattr(stack.client, method)(
            path, headers=eve, **({"json": body} if body else {})
        )
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "forbidden"


def test_employee_cannot_upload_or_delete(stack, transit):
    eve = login(stack.client, "eve", "eve-pass-1")
    status, body = upload(stack, "x.md", b"# hi\n\nsome text", headers=eve)
    assert status == 403
    assert (
        stack.client.delete(f"/api/documents/{transit['document_id']}", headers=eve).status_code
        == 403
    )


def test_admin_user_and_group_management(stack):
    users = stack.client.get("/api/admin/users", headers=stack.admin).json()["users"]
    assert {u["username"] for u in users} >= {"admin", "hannah", "eve"}
    duplicate = stack.client.post("/api/admin/groups", json={"name": "hr"}, headers=stack.admin)
    assert duplicate.status_code == 409
    unknown = stack.client.post(
        "/api/admin/users",
        headers=stack.admin,
        json={
            "username": "zed",
            "password": "zed-pass-1",
            "role": "employee",
            "groups": ["nosuch"],
        },
    )
    assert unknown.status_code == 400 and "nosuch" in unknown.json()["error"]["message"]
    bad_role = stack.client.post(
        "/api/admin/users",
        headers=stack.admin,
        json={"username": "zed", "password": "zed-pass-1", "role": "king"},
    )
    assert bad_role.status_code == 400


# --- documents: happy path, dedup, ACL ----------------------------------------------------


def test_ingested_document_is_listed_with_chunks_in_every_store(stack, transit):
    doc = stack.client.get(f"/api/documents/{transit['document_id']}", headers=stack.admin).json()
    assert (
        doc["status"] == "ready"
        and doc["chunk_count"] > 0
        and doc["filename"] == "transit-benefit.md"
    )
    counts = store_counts(stack, transit["document_id"])
    assert counts["sql"] == counts["lexical"] == counts["vector"] == doc["chunk_count"]
    job = finished_job(stack, transit["job_id"])
    assert job["progress"] == 1.0 and job["stage"] == "done"


def test_reupload_of_same_content_is_deduplicated(stack, transit):
    status, body = upload(stack, "renamed.md", corpus_file("workplace/transit-benefit.md"))
    assert status == 200
    assert body == {
        "document_id": transit["document_id"],
        "job_id": transit["job_id"],
        "duplicate": True,
        "status": "ready",
        "groups": [],
    }
    names = [
        d["filename"]
        for d in stack.client.get("/api/documents", headers=stack.admin).json()["documents"]
    ]
    assert "renamed.md" not in names


def test_search_is_limited_to_what_the_caller_may_read(stack, transit, promotions_hr):
    query = {"query": "promotion eligibility time in grade", "k": 10}

    def documents_found(headers):
        response = stack.client.post("/api/search", json=query, headers=headers)
        assert response.status_code == 200
        return {r["document_id"] for r in response.json()["results"]}

    assert promotions_hr["document_id"] in documents_found(stack.admin)
    assert promotions_hr["document_id"] in documents_found(
        login(stack.client, "hannah", "hannah-pass")
    )
    eve = login(stack.client, "eve", "eve-pass-1")
    assert promotions_hr["document_id"] not in documents_found(eve)
    listed = {d["id"] for d in stack.client.get("/api/documents", headers=eve).json()["documents"]}
    assert transit["document_id"] in listed and promotions_hr["document_id"] not in listed
    assert (
        stack.client.get(f"/api/documents/{promotions_hr['document_id']}", headers=eve).status_code
        == 404
    )


def test_search_results_have_the_contract_fields_and_are_audited(stack, transit):
    response = stack.client.post(
        "/api/search", json={"query": "transit subsidy enrollment"}, headers=stack.admin
    )
    results = response.json()["results"]
    assert results and set(results[0]) >= {
        "document_id",
        "title",
        "page",
        "section",
        "text",
        "score",
    }
    assert results[0]["document_id"] == transit["document_id"]
    audit = stack.client.get("/api/admin/audit", headers=stack.admin).json()["entries"]
    entry = next(e for e in audit if e["query"] == "transit subsidy enrollment")
    assert entry["username"] == "admin" and entry["action"] == "search"
    assert entry["chunk_ids"] == [r["chunk_id"] for r in results]


# --- bad input ---------------------------------------------------------------------------


def _uploads(stack: Stack) -> set[str]:
    return {p.name for p in stack.settings.uploads_dir.iterdir()}


def test_unsupported_type_is_415_listing_supported_types(stack):
    before = _uploads(stack)
    status, body = upload(stack, "malware.exe", b"MZ\x90\x00binary")
    assert status == 415
    assert ".pdf" in body["error"]["message"] and ".md" in body["error"]["message"]
    assert _uploads(stack) == before


def test_empty_file_is_400(stack):
    before = _uploads(stack)
    status, body = upload(stack, "empty.md", b"")
    assert status == 400 and "empty" in body["error"]["message"]
    assert _uploads(stack) == before


def test_missing_file_part_is_400(stack):
    response = stack.client.post("/api/documents", data={"title": "no file"}, headers=stack.admin)
    assert response.status_code == 400


def test_file_over_the_limit_is_413_and_nothing_stays(stack):
    before = _uploads(stack)
    status, body = upload(stack, "big.md", b"a" * (MAX_UPLOAD + 1))
    assert status == 413 and str(MAX_UPLOAD) in body["error"]["message"]
    assert _uploads(stack) == before


def test_streamed_upload_without_length_is_cut_at_the_limit(stack):
    """No Content-Length (chunked): the limit is enforced while streaming to disk."""
    boundary = "enclaveboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.md"\r\n'
        "Content-Type: text/markdown\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        for _ in range(40):
            yield b"word " * 2000  # 10 kB per piece, 400 kB in all
        yield tail

    before = _uploads(stack)
    response = stack.client.post(
        "/api/documents",
        content=body(),
        headers={**stack.admin, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert _uploads(stack) == before


def test_corrupt_pdf_fails_its_job_and_leaves_nothing_behind(stack, transit):
    status, body = upload(
        stack, "broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage" * 20
    )
    assert status == 202
    job = finished_job(stack, body["job_id"])
    assert job["state"] == "failed" and job["error"] and "broken.pdf" in job["error"]
    doc = stack.client.get(f"/api/documents/{body['document_id']}", headers=stack.admin).json()
    assert doc["status"] == "failed" and doc["error"] == job["error"]
    assert store_counts(stack, body["document_id"]) == {"sql": 0, "lexical": 0, "vector": 0}
    assert not any(name.startswith(body["document_id"]) for name in _uploads(stack))
    other = stack.client.get(f"/api/documents/{transit['document_id']}", headers=stack.admin).json()
    assert (
        other["status"] == "ready"
        and store_counts(stack, transit["document_id"])["vector"] == other["chunk_count"]
    )


@pytest.mark.parametrize(
    "name", ["../../etc/passwd.md", "/etc/passwd.md", "..\\..\\boot\\evil.md", "nul\x00byte.md"]
)
def test_path_tricks_in_filenames_stay_inside_uploads(stack, name):
    content = f"# Note {name!r}\n\nA harmless note about the cafeteria menu and its opening hours.".encode()
    status, body = upload(stack, name, content)
    assert status == 202, body
    doc = stack.client.get(f"/api/documents/{body['document_id']}", headers=stack.admin).json()
    assert (
        "/" not in doc["filename"] and "\\" not in doc["filename"] and "\x00" not in doc["filename"]
    )
    stored = [
        p for p in stack.settings.uploads_dir.iterdir() if p.name.startswith(body["document_id"])
    ]
    assert len(stored) == 1 and stored[0].resolve().parent == stack.settings.uploads_dir.resolve()
    assert not Path("/etc/passwd.md").exists() and not Path("/boot/evil.md").exists()
    finished_job(stack, body["job_id"])


def test_unknown_ids_are_404(stack):
    for path in ["/api/documents/nope", "/api/jobs/nope", "/api/conversations/nope"]:
        response = stack.client.get(path, headers=stack.admin)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
    assert stack.client.delete("/api/documents/nope", headers=stack.admin).status_code == 404


def test_unknown_group_on_upload_is_400(stack):
    status, body = upload(
        stack, "g.md", b"# G\n\nText for a group that does not exist.", groups="nosuch"
    )
    assert status == 400 and "nosuch" in body["error"]["message"]


# --- delete -------------------------------------------------------------------------------


def test_delete_removes_every_trace(stack):
    status, body = upload(stack, "leaving.md", corpus_file("hiring/leaving-tts.md"))
    assert status == 202 and finished_job(stack, body["job_id"])["state"] == "done"
    assert store_counts(stack, body["document_id"])["vector"] > 0
    response = stack.client.delete(f"/api/documents/{body['document_id']}", headers=stack.admin)
    assert response.status_code == 202
    job = finished_job(stack, response.json()["job_id"])
    assert job["state"] == "done" and job["kind"] == "delete"
    assert (
        stack.client.get(f"/api/documents/{body['document_id']}", headers=stack.admin).status_code
        == 404
    )
    assert store_counts(stack, body["document_id"]) == {"sql": 0, "lexical": 0, "vector": 0}
    assert not any(name.startswith(body["document_id"]) for name in _uploads(stack))
    results = stack.client.post(
        "/api/search",
        json={"query": "leaving TTS offboarding checklist", "k": 10},
        headers=stack.admin,
    ).json()["results"]
    assert body["document_id"] not in {r["document_id"] for r in results}


# --- chat and conversations ----------------------------------------------------------------


def test_chat_answers_with_sources_and_citations_and_persists_the_turn(stack, transit):
    response = stack.client.post(
        "/api/chat", json={"message": "Who is eligible for transit subsidies?"}, headers=stack.admin
    )
    assert response.status_code == 200, response.text
    body = response.json()
    first_source = stack.llm.requests[-1]["messages"][-1]["content"]
    # the fake model repeats source [1]'s first sentence and a marker; the marker is removed
    assert not body["declined"] and "[1]" not in body["answer"]
    assert body["answer"] and body["answer"] in " ".join(first_source.split())
    assert body["sources"] and set(body["sources"][0]) == {
        "document_id",
        "title",
        "page",
        "section",
        "text",
    }
    assert all(s["text"] in first_source for s in body["sources"])
    assert body["citations"] and body["citations"][0]["document_id"] == transit["document_id"]
    assert set(body["citations"][0]) == {"document_id", "title", "page", "section", "quote"}
    quote = body["citations"][0]["quote"]
    assert any(quote in s["text"] for s in body["sources"])
    conversation = stack.client.get(
        f"/api/conversations/{body['conversation_id']}", headers=stack.admin
    ).json()
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]
    assert conversation["messages"][1]["citations"] == body["citations"]
    assert conversation["messages"][1]["content"] == body["answer"]
    listed = stack.client.get("/api/conversations", headers=stack.admin).json()["conversations"]
    assert body["conversation_id"] in {c["id"] for c in listed}


def test_chat_answer_the_sources_do_not_support_becomes_the_decline(stack, transit):
    made_up = "Every employee receives a company car and free lunches on Fridays."
    stack.llm.replies.append(made_up)
    body = stack.client.post(
        "/api/chat", json={"message": "Do I get a company car?"}, headers=stack.admin
    ).json()
    assert body["declined"] is True
    assert body["answer"].startswith("I could not find this in the documents you can access")
    assert made_up not in body["answer"]
    assert body["citations"] == []
    # the nearest sources are still listed, in the reply and in the answer text
    assert body["sources"] and body["sources"][0]["title"] in body["answer"]


def test_chat_answer_contradicting_its_source_is_not_cited(stack, transit):
    stack.llm.replies.append("Transit subsidies are not available to any employee.")
    body = stack.client.post(
        "/api/chat", json={"message": "Who is eligible for transit subsidies?"}, headers=stack.admin
    ).json()
    assert body["declined"] is True and body["citations"] == []


def test_follow_up_sends_history_to_the_model(stack, transit):
    first = stack.client.post(
        "/api/chat",
        json={"message": "How do I enroll in the transit benefit?"},
        headers=stack.admin,
    ).json()
    stack.client.post(
        "/api/chat",
        json={"message": "And how do I cancel it?", "conversation_id": first["conversation_id"]},
        headers=stack.admin,
    )
    last_request = stack.llm.requests[-1]["messages"]
    assert any(m["role"] == "assistant" and m["content"] == first["answer"] for m in last_request)
    messages = stack.client.get(
        f"/api/conversations/{first['conversation_id']}", headers=stack.admin
    ).json()["messages"]
    assert len(messages) == 4


def test_conversations_are_private_to_their_owner(stack, transit):
    body = stack.client.post(
        "/api/chat", json={"message": "transit benefit"}, headers=stack.admin
    ).json()
    eve = login(stack.client, "eve", "eve-pass-1")
    assert (
        stack.client.get(f"/api/conversations/{body['conversation_id']}", headers=eve).status_code
        == 404
    )
    follow = stack.client.post(
        "/api/chat",
        json={"message": "more", "conversation_id": body["conversation_id"]},
        headers=eve,
    )
    assert follow.status_code == 404


def stream_chat(stack: Stack, message: str) -> list[tuple[str, dict]]:
    """(event, data) of each SSE event of a streamed chat turn."""
    with stack.client.stream(
        "POST", "/api/chat", json={"message": message, "stream": True}, headers=stack.admin
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join(response.iter_text())
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_chat_stream_sends_token_citations_done_events(stack, transit):
    events = stream_chat(stack, "transit subsidy eligibility")
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["citations", "done"] and set(kinds[:-2]) == {"token"}
    streamed = "".join(data["text"] for kind, data in events if kind == "token").strip()
    done = events[-1][1]
    # the shown answer is the streamed one without its [n] marker
    assert streamed.endswith("[1]") and done["answer"] == streamed.removesuffix("[1]").strip()
    assert done["declined"] is False
    citations = events[-2][1]
    assert citations["citations"][0]["document_id"] == transit["document_id"]
    assert citations["sources"] and {"text", "page"} <= set(citations["sources"][0])
    stored = stack.client.get(
        f"/api/conversations/{done['conversation_id']}", headers=stack.admin
    ).json()
    assert stored["messages"][-1]["content"] == done["answer"]


def test_chat_stream_declines_an_unsupported_answer_in_the_done_event(stack, transit):
    stack.llm.replies.append("Parking downtown is free for every contractor on weekends.")
    by_kind = dict(stream_chat(stack, "Is parking free?"))
    assert by_kind["citations"]["citations"] == [] and by_kind["citations"]["sources"]
    assert by_kind["done"]["declined"] is True
    assert by_kind["done"]["answer"].startswith("I could not find this")


def test_employee_chat_never_puts_forbidden_chunks_in_the_prompt(stack, transit, promotions_hr):
    eve = login(stack.client, "eve", "eve-pass-1")
    response = stack.client.post(
        "/api/chat", json={"message": "What are the promotion rules at TTS?"}, headers=eve
    )
    assert response.status_code == 200
    prompt = json.dumps(stack.llm.requests[-1]["messages"])
    assert "Promotions at TTS" not in prompt
    assert promotions_hr["document_id"] not in {
        c["document_id"] for c in response.json()["citations"]
    }


def test_chat_with_llm_down_is_502_with_a_clear_message(stack, transit):
    settings = stack.settings.model_copy(
        update={"llm_base_url": f"http://127.0.0.1:{free_port()}/v1"}
    )
    with TestClient(create_app(settings, job_queue=stack.queue)) as client:
        headers = login(client, "admin", ADMIN_PASSWORD)
        response = client.post("/api/chat", json={"message": "transit"}, headers=headers)
        assert response.status_code == 502
        assert "language model" in response.json()["error"]["message"]
        with client.stream(
            "POST", "/api/chat", json={"message": "transit", "stream": True}, headers=headers
        ) as stream:
            raw = "".join(stream.iter_text())
        assert raw.startswith("event: error\n") and "language model" in raw
        ready = client.get("/readyz", headers=headers)  # details: admins (issue 12)
        assert ready.status_code == 503 and ready.json()["failed"] == ["llm"]


# --- health, metrics, frontend -------------------------------------------------------------


def test_health_ready_and_metrics(stack, transit):
    assert stack.client.get("/healthz").json() == {"status": "ok"}
    ready = stack.client.get("/readyz", headers=stack.admin)
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"database", "vector_store", "queue", "llm"}
    metrics = stack.client.get("/metrics", headers=stack.admin).text
    assert 'enclave_jobs{kind="ingest",state="done"}' in metrics
    assert "enclave_http_requests_total" in metrics and "enclave_chat_seconds" in metrics


def test_frontend_is_served_at_root_and_openapi_lists_the_api(stack):
    assert "enclave portal" in stack.client.get("/").text
    paths = stack.client.get("/openapi.json").json()["paths"]
    assert {"/api/documents", "/api/chat", "/api/search", "/api/admin/users"} <= set(paths)


def test_sqlite_state_lives_under_data_dir(stack, transit):
    with sqlite3.connect(stack.settings.data_dir / "enclave.db") as connection:
        assert connection.execute("SELECT count(*) FROM documents").fetchone()[0] >= 1


# --- the queue unreachable, the CLI against a served gateway --------------------------------


def test_upload_with_the_broker_down_is_502_and_the_job_is_failed(stack):
    from services.gateway.job_queue import CeleryJobQueue
    from services.worker.app import create_celery

    down = stack.settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    celery = create_celery(down)
    celery.conf.broker_transport_options = {"max_retries": 0}
    celery.conf.task_publish_retry = False
    queue = CeleryJobQueue(celery, down.ingest_queue, down.delete_queue)
    with TestClient(create_app(down, job_queue=queue)) as client:
        headers = login(client, "admin", ADMIN_PASSWORD)
        response = client.post(
            "/api/documents",
            files={"file": ("q.md", b"# Queue\n\nThe broker is down today.")},
            headers=headers,
        )
        assert response.status_code == 502
        assert "queue" in response.json()["error"]["message"]
        failed = [
            d
            for d in client.get("/api/documents", headers=headers).json()["documents"]
            if d["filename"] == "q.md"
        ]
        assert failed and failed[0]["status"] == "failed"
        assert client.get("/readyz", headers=headers).json()["failed"] == ["queue"]


@pytest.fixture(scope="module")
def served(stack):
    """The same app on a real loopback port, for the CLI (a separate process)."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            stack.client.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],
    )


def test_cli_ingest_reports_progress_and_rejections(stack, served, tmp_path):
    good = tmp_path / "cafeteria.md"
    good.write_text(
        "# Cafeteria\n\nThe cafeteria on floor two serves lunch from noon until two o'clock."
    )
    bad = tmp_path / "tool.exe"
    bad.write_bytes(b"MZ binary")
    result = _cli(
        "ingest",
        str(good),
        str(bad),
        "--url",
        served,
        "--password",
        ADMIN_PASSWORD,
        "--poll",
        "0.2",
    )
    assert result.returncode == 1  # one file was rejected
    assert "tool.exe: rejected (415" in result.stderr
    assert "cafeteria.md" in result.stderr and "100/100" in result.stderr
    again = _cli("ingest", str(good), "--url", served, "--password", ADMIN_PASSWORD)
    assert again.returncode == 0 and "already ingested" in again.stdout


def test_cli_ask_prints_the_answer_and_its_citations(stack, served, transit):
    result = _cli(
        "ask",
        "Who is eligible for transit subsidies?",
        "--url",
        served,
        "--password",
        ADMIN_PASSWORD,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] and "[1]" not in lines[0] and not lines[0].startswith("I could not find")
    assert any(line.startswith("[1] ") and "ransit" in line for line in lines)
    wrong = _cli("ask", "hello", "--url", served, "--password", "wrong-password")
    assert wrong.returncode == 1 and "401" in wrong.stderr


def test_cli_eval_against_the_gateway_scores_citations_and_refusals(
    stack, served, transit, tmp_path
):
    questions = tmp_path / "questions.jsonl"
    gold = {
        "id": "q060",
        "question": "Who has to approve my transit subsidy application?",
        "answer": "Your supervisor, then the GSA Transit Coordinator, then DOT review/processing.",
        "doc": "workplace/transit-benefit.md",
        "page": None,
        "evidence": "The approval process is supervisor, GSA Transit Coordinator, and DOT review/processing.",
        "answerable": True,
        "follow_up_of": None,
    }
    unanswerable = {
        "id": "q091",
        "question": "Is there a dress code for the office?",
        "answer": None,
        "doc": None,
        "page": None,
        "evidence": None,
        "answerable": False,
        "follow_up_of": None,
    }
    questions.write_text(json.dumps(gold) + "\n" + json.dumps(unanswerable) + "\n")
    # the first question gets the usual (extractive) answer, the second a made-up one
    stack.llm.replies.extend(["", "Jeans and sandals are fine every day in every office."])
    out = tmp_path / "eval.json"
    result = _cli(
        "eval", str(questions), "--url", served, "--password", ADMIN_PASSWORD, "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "citation_precision" in result.stdout and "refusal_accuracy" in result.stdout
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert metrics["questions"] == 2 and metrics["answerable"] == 1
    assert metrics["recall_at_20"] == 1.0  # the transit document is the only one anyone may read
    assert metrics["citation_recall"] == 1.0  # its id was mapped back to the gold path
    assert metrics["refusal_accuracy"] == 1.0 and metrics["false_refusals"] == 0.0
    missing = _cli("eval", str(tmp_path / "nope.jsonl"), "--url", served)
    assert missing.returncode == 2 and "no question file" in missing.stderr
