"""LDAP logins against a real slapd started by the test: bind, groups from the directory, roles."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.db import make_engine, migrate, session_factory
from services.gateway.app import create_app
from services.gateway.auth_service import ensure_admin
from services.settings import Settings
from tests.integration.identity.slapd import ROOT_DN, ROOT_PASSWORD, SUFFIX, running_slapd

pytestmark = [pytest.mark.integration]


class NoQueue:
    def enqueue(self, kind: str, job_id: str) -> None:
        raise AssertionError("no jobs in these tests")

    def check(self) -> None: ...


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ldap")
    users = {"alice": "alice-ldap-pass", "bob": "bob-ldap-pass"}
    groups = {"hr": ["alice"], "enclave-editors": ["alice"], "finance": ["bob"]}
    with running_slapd(tmp, users, groups) as slapd:
        settings = Settings(
            data_dir=tmp / "data",
            admin_password="admin-pass-123",
            frontend_dir=tmp / "none",
            auth_ldap_url=slapd.url,
            auth_ldap_user_dn=f"uid={{username}},{slapd.people}",
            auth_ldap_group_base=slapd.groups,
            auth_external_editor_group="enclave-editors",
        )
        migrate(settings.resolved_database_url)
        ensure_admin(session_factory(make_engine(settings.resolved_database_url)), "admin-pass-123")
        with TestClient(create_app(settings, job_queue=NoQueue())) as client:
            yield client, slapd


def _login(client: TestClient, username: str, password: str):
    response = client.post("/api/auth/login", json={"username": username, "password": password})
    client.cookies.clear()
    return response


def test_directory_users_log_in_with_their_groups_and_role(gateway):
    client, _ = gateway
    response = _login(client, "alice", "alice-ldap-pass")
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert user["groups"] == ["enclave-editors", "hr"] and user["role"] == "editor"
    bob = _login(client, "bob", "bob-ldap-pass").json()["user"]
    assert bob["groups"] == ["finance"] and bob["role"] == "employee"


def test_wrong_directory_passwords_and_unknown_users_are_refused(gateway):
    client, _ = gateway
    for username, password in (("alice", "wrong"), ("nobody", "whatever")):
        assert _login(client, username, password).status_code == 401
    assert _login(client, "alice", "!external:ldap").status_code == 401
    assert _login(client, "admin", "admin-pass-123").status_code == 200  # local accounts still work


def test_group_changes_in_the_directory_apply_at_the_next_login_and_end_old_sessions(gateway):
    import ldap3

    client, slapd = gateway
    first = _login(client, "bob", "bob-ldap-pass").json()
    headers = {"Authorization": f"Bearer {first['token']}"}
    assert client.get("/api/me", headers=headers).status_code == 200
    root = ldap3.Connection(ldap3.Server(slapd.url), ROOT_DN, ROOT_PASSWORD, auto_bind=True)
    root.modify(
        f"cn=hr,ou=groups,{SUFFIX}",
        {"member": [(ldap3.MODIFY_ADD, [f"uid=bob,{slapd.people}"])]},
    )
    second = _login(client, "bob", "bob-ldap-pass").json()
    assert second["user"]["groups"] == ["finance", "hr"]
    assert client.get("/api/me", headers=headers).status_code == 401
