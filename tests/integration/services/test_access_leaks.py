"""Two groups, one planted document each: a user without access learns nothing of the other's.

No chunk, citation, snippet, count, id or filename of the hr document reaches eve (no
group) or fin (finance) through search, chat (JSON and stream), history, jobs,
duplicates, documents or audit; forged and expired tokens are refused; and a bounded
schemathesis run over /openapi.json finds no 5xx.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from services.db import ApiToken, Chunk, utcnow
from services.gateway.security import token_digest
from tests.integration.services.access_stack import HR_TEXT, access_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTIONS = (
    "How much is the quokka retention bonus?",
    "quokka retention bonus senior engineer March",
    "What is confidential to human resources?",
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with access_stack(tmp_path_factory.mktemp("leaks")) as built:
        yield built


def _markers(stack) -> list[str]:
    hr = stack.documents["hr"]
    with stack.sessions() as session:
        chunk_ids = list(
            session.scalars(select(Chunk.id).where(Chunk.document_id == hr["document_id"]))
        )
    assert chunk_ids
    return [
        hr["document_id"],
        hr["job_id"],
        hr["filename"],
        "quokka-bonus",  # the questions name the topic; these come only from the document
        "4,200",
        "pays 4",
        "quokka bonus is confidential",
        *chunk_ids,
    ]


def _everything_a_user_can_fetch(stack, headers: dict, editor: bool) -> list[str]:
    client = stack.client
    bodies: list[str] = []
    for question in QUESTIONS:
        bodies.append(
            client.post("/api/search", json={"query": question, "k": 20}, headers=headers).text
        )
        bodies.append(client.post("/api/chat", json={"message": question}, headers=headers).text)
        with client.stream(
            "POST", "/api/chat", json={"message": question, "stream": True}, headers=headers
        ) as streamed:
            bodies.append("".join(streamed.iter_text()))
    conversations = client.get("/api/conversations", headers=headers).json()["conversations"]
    bodies.append(str(conversations))
    for conversation in conversations:
        bodies.append(client.get(f"/api/conversations/{conversation['id']}", headers=headers).text)
    bodies.append(client.get("/api/documents", headers=headers).text)
    hr = stack.documents["hr"]
    unknown = "00000000-0000-4000-8000-000000000000"
    for template in ("/api/documents/{}", "/api/jobs/{}", "/api/documents/{}/groups"):
        method = "put" if template.endswith("groups") else "get"
        if method == "put" and not editor:
            continue
        hidden_id = hr["job_id"] if "jobs" in template else hr["document_id"]
        kwargs = {"json": {"groups": []}} if method == "put" else {}
        hidden = getattr(client, method)(template.format(hidden_id), headers=headers, **kwargs)
        absent = getattr(client, method)(template.format(unknown), headers=headers, **kwargs)
        # the same answer as for an id that does not exist (it only echoes the id asked for)
        assert hidden.status_code == absent.status_code == 404, template
        assert hidden.text.replace(hidden_id, unknown) == absent.text
    bodies.append(client.get("/api/jobs", headers=headers).text)
    audit = client.get("/api/admin/audit", headers=headers)
    assert audit.status_code == 403
    bodies.append(audit.text)
    if editor:
        status, duplicate = stack.upload("copy.md", HR_TEXT.encode(), headers=headers)
        assert status == 409
        bodies.append(str(duplicate))
    return bodies


@pytest.mark.parametrize(
    ("username", "password", "editor"),
    [("eve", "eve-pass-12", False), ("fin", "fin-pass-12", False), ("ed", "ed-pass-123", True)],
)
def test_no_trace_of_the_other_groups_document(stack, username, password, editor):
    headers = stack.login(username, password)
    seen_by_llm_before = len(stack.llm.requests)
    bodies = _everything_a_user_can_fetch(stack, headers, editor)
    prompts = [str(r["messages"]) for r in stack.llm.requests[seen_by_llm_before:]]
    assert prompts  # the chats did reach the model
    markers = _markers(stack)
    for text in bodies + prompts:
        for marker in markers:
            assert marker.lower() not in text.lower(), (marker, text[:300])


def test_a_member_does_see_it_so_the_markers_are_real(stack):
    hannah = stack.login("hannah", "hannah-pass")
    found = stack.client.post("/api/search", json={"query": QUESTIONS[0]}, headers=hannah).json()
    assert stack.documents["hr"]["document_id"] in {r["document_id"] for r in found["results"]}
    answer = stack.client.post("/api/chat", json={"message": QUESTIONS[0]}, headers=hannah).json()
    assert "quokka" in answer["answer"].lower()


def test_forged_and_expired_tokens_are_refused(stack):
    forged = {"Authorization": "Bearer " + "A" * 43}
    assert stack.client.get("/api/me", headers=forged).status_code == 401
    assert (
        stack.client.post("/api/search", json={"query": "quokka"}, headers=forged).status_code
        == 401
    )
    headers = stack.login("hannah", "hannah-pass")
    token = headers["Authorization"].split()[1]
    with stack.sessions.begin() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == token_digest(token))
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    assert stack.client.get("/api/me", headers=headers).status_code == 401
    cookie_only = stack.client.get("/api/me", cookies={"enclave_session": token})
    stack.client.cookies.clear()
    assert cookie_only.status_code == 401


def test_schemathesis_finds_no_server_error(stack):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", stack.client.app)
    headers = stack.login("admin", "admin-pass-123")
    failures: list[str] = []
    statuses: list[int] = []
    operations = 0
    for result in schema.get_all_operations():
        operations += 1
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=8,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def probe(case) -> None:
            response = case.call(headers=headers)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"
                )

        probe()
    stack.queue.drain()
    assert failures == []
    assert operations >= 20 and len(statuses) >= 2 * operations
    assert any(200 <= status < 300 for status in statuses)
