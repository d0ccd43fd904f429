"""Users, roles and groups with their lifecycle (API and ``enclave admin``), and the audit trail."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import select, text

from services.cli import main
from services.db import Chunk
from tests.integration.services.access_stack import access_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with access_stack(tmp_path_factory.mktemp("lifecycle")) as built:
        yield built


def _new_user(stack, username: str, role: str = "employee", groups=()) -> dict:
    stack.create(
        "/api/admin/users",
        {
            "username": username,
            "password": f"{username}-pass",
            "role": role,
            "groups": list(groups),
        },
    )
    return stack.login(username, f"{username}-pass")


def test_disable_ends_sessions_and_refuses_login_until_enabled(stack):
    headers = _new_user(stack, "dora")
    response = stack.client.patch(
        "/api/admin/users/dora", json={"disabled": True}, headers=stack.admin
    )
    assert response.status_code == 200 and response.json()["disabled"] is True
    assert stack.client.get("/api/me", headers=headers).status_code == 401
    login = stack.client.post("/api/auth/login", json={"username": "dora", "password": "dora-pass"})
    assert login.status_code == 401 and "disabled" in login.json()["error"]["message"]
    stack.client.patch("/api/admin/users/dora", json={"disabled": False}, headers=stack.admin)
    assert stack.login("dora", "dora-pass")


def test_group_and_role_changes_end_sessions_and_apply_at_next_login(stack):
    headers = _new_user(stack, "gus")
    hr_document = stack.documents["hr"]["document_id"]

    def hr_found(session_headers) -> bool:
        found = stack.client.post(
            "/api/search", json={"query": "quokka bonus"}, headers=session_headers
        ).json()
        return hr_document in {r["document_id"] for r in found["results"]}

    assert not hr_found(headers)
    changed = stack.client.patch(
        "/api/admin/users/gus", json={"groups": ["hr"], "role": "editor"}, headers=stack.admin
    )
    assert changed.json()["groups"] == ["hr"] and changed.json()["role"] == "editor"
    assert stack.client.get("/api/me", headers=headers).status_code == 401
    fresh = stack.login("gus", "gus-pass")
    assert hr_found(fresh)
    status, _ = stack.upload("gus.md", b"# Gus\n\nGus may upload as an editor.", headers=fresh)
    assert status == 202


def test_password_reset_and_own_change_end_sessions(stack):
    headers = _new_user(stack, "pam")
    short = stack.client.post(
        "/api/admin/users/pam/password", json={"password": "short"}, headers=stack.admin
    )
    assert short.status_code == 400
    reset = stack.client.post(
        "/api/admin/users/pam/password", json={"password": "pam-new-pass"}, headers=stack.admin
    )
    assert reset.status_code == 200
    assert stack.client.get("/api/me", headers=headers).status_code == 401
    headers = stack.login("pam", "pam-new-pass")
    wrong = stack.client.post(
        "/api/auth/password",
        json={"current_password": "nope-nope", "new_password": "pam-third-pass"},
        headers=headers,
    )
    assert wrong.status_code == 401
    own = stack.client.post(
        "/api/auth/password",
        json={"current_password": "pam-new-pass", "new_password": "pam-third-pass"},
        headers=headers,
    )
    assert own.status_code == 200
    assert stack.client.get("/api/me", headers=headers).status_code == 401
    assert stack.login("pam", "pam-third-pass")


def test_revoke_and_delete(stack):
    headers = _new_user(stack, "rex")
    revoked = stack.client.post("/api/admin/users/rex/revoke-sessions", headers=stack.admin)
    assert revoked.json() == {"username": "rex", "revoked": 1}
    assert stack.client.get("/api/me", headers=headers).status_code == 401
    headers = stack.login("rex", "rex-pass")
    assert stack.client.delete("/api/admin/users/rex", headers=stack.admin).json()["deleted"]
    assert stack.client.get("/api/me", headers=headers).status_code == 401
    assert stack.client.delete("/api/admin/users/rex", headers=stack.admin).status_code == 404
    assert stack.client.delete("/api/admin/users/admin", headers=stack.admin).status_code == 400
    selfish = stack.client.patch(
        "/api/admin/users/admin", json={"role": "employee"}, headers=stack.admin
    )
    assert selfish.status_code == 400


def test_employees_read_and_ask_but_cannot_manage(stack):
    eve = stack.login("eve", "eve-pass-12")
    status, body = stack.upload("e.md", b"# E\n\ntext", headers=eve)
    assert status == 403
    public = stack.documents["public"]["document_id"]
    assert stack.client.delete(f"/api/documents/{public}", headers=eve).status_code == 403
    assert stack.client.get("/api/admin/users", headers=eve).status_code == 403
    assert stack.client.get("/api/admin/audit", headers=eve).status_code == 403
    assert (
        stack.client.post("/api/chat", json={"message": "wombat parking"}, headers=eve).status_code
        == 200
    )


def test_cli_admin_manages_users_groups_and_sessions(stack, monkeypatch, capsys):
    monkeypatch.setenv("ENCLAVE_DATA_DIR", str(stack.settings.data_dir))
    monkeypatch.delenv("ENCLAVE_DATABASE_URL", raising=False)
    assert main(["admin", "groups", "create", "legal"]) == 0
    assert main(["admin", "groups", "create", "x" * 101]) == 1
    assert "at most 100" in capsys.readouterr().err
    assert (
        main(["admin", "users", "create", "cli-user", "--role", "editor", "--groups", "legal"]) == 0
    )
    captured = capsys.readouterr()
    password = captured.err.split("password for cli-user: ")[1].strip()
    headers = stack.login("cli-user", password)
    assert stack.client.get("/api/me", headers=headers).json()["groups"] == ["legal"]
    assert main(["admin", "users", "set-groups", "cli-user", "hr"]) == 0
    assert stack.client.get("/api/me", headers=headers).status_code == 401
    headers = stack.login("cli-user", password)
    assert main(["admin", "users", "disable", "cli-user"]) == 0
    assert stack.client.get("/api/me", headers=headers).status_code == 401
    assert main(["admin", "users", "enable", "cli-user"]) == 0
    assert main(["admin", "users", "reset-password", "cli-user", "--password", "cli-new-pass"]) == 0
    assert stack.login("cli-user", "cli-new-pass")
    assert main(["admin", "users", "set-role", "cli-user", "employee"]) == 0
    assert main(["admin", "users", "delete", "cli-user"]) == 0
    assert main(["admin", "users", "delete", "cli-user"]) == 1
    capsys.readouterr()
    assert main(["admin", "users", "list"]) == 0
    assert "cli-user" not in capsys.readouterr().out


# --- audit ------------------------------------------------------------------------------


def test_every_question_is_audited_with_chunks_answer_and_user(stack):
    hannah = stack.login("hannah", "hannah-pass")
    answer = stack.client.post(
        "/api/chat", json={"message": "How much is the quokka retention bonus?"}, headers=hannah
    ).json()
    with stack.client.stream(
        "POST",
        "/api/chat",
        json={"message": "Who approves platypus spending?", "stream": True},
        headers=stack.login("fin", "fin-pass-12"),
    ) as streamed:
        assert "event: done" in "".join(streamed.iter_text())
    entries = stack.client.get(
        "/api/admin/audit", params={"user": "hannah", "q": "quokka"}, headers=stack.admin
    ).json()["entries"]
    assert entries and entries[0]["username"] == "hannah" and entries[0]["action"] == "chat"
    assert entries[0]["answer"] == answer["answer"]
    with stack.sessions() as session:
        hr_chunks = set(
            session.scalars(
                select(Chunk.id).where(Chunk.document_id == stack.documents["hr"]["document_id"])
            )
        )
    assert hr_chunks & set(entries[0]["chunk_ids"])
    fin_entries = stack.client.get(
        "/api/admin/audit", params={"user": "fin"}, headers=stack.admin
    ).json()["entries"]
    assert fin_entries[0]["query"] == "Who approves platypus spending?" and fin_entries[0]["answer"]
    future = stack.client.get(
        "/api/admin/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=stack.admin
    ).json()["entries"]
    assert future == []
    exported = stack.client.get(
        "/api/admin/audit.csv", params={"user": "hannah"}, headers=stack.admin
    )
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows and {r["username"] for r in rows} == {"hannah"}
    assert any("quokka" in r["query"] for r in rows)


def test_the_audit_trail_is_append_only_in_the_database(stack):
    import sqlalchemy.exc

    with stack.sessions() as session:
        assert session.execute(text("SELECT count(*) FROM audit")).scalar() > 0
    for statement in ("UPDATE audit SET answer = 'rewritten'", "DELETE FROM audit"):
        with pytest.raises(sqlalchemy.exc.DatabaseError), stack.sessions.begin() as session:
            session.execute(text(statement))
    with stack.sessions() as session:
        assert (
            session.execute(text("SELECT count(*) FROM audit WHERE answer = 'rewritten'")).scalar()
            == 0
        )
