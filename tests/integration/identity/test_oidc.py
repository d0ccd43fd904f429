"""OIDC login (authorization code + PKCE) against a provider the test stands up on loopback."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from services.db import make_engine, migrate, session_factory
from services.gateway.app import create_app
from services.gateway.auth_service import ensure_admin
from services.settings import Settings
from tests.integration.identity.oidc_provider import LocalOidcProvider, ProviderUser
from tests.integration.identity.test_ldap import NoQueue
from tests.support import free_port

pytestmark = [pytest.mark.integration]

CALLBACK = "http://enclave.local/api/auth/oidc/callback"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oidc")
    with LocalOidcProvider(free_port(), "enclave-portal", CALLBACK) as provider:
        settings = Settings(
            data_dir=tmp / "data",
            admin_password="admin-pass-123",
            frontend_dir=tmp / "none",
            auth_oidc_issuer=provider.issuer,
            auth_oidc_client_id="enclave-portal",
            auth_oidc_redirect_url=CALLBACK,
            auth_external_admin_group="it-admins",
        )
        migrate(settings.resolved_database_url)
        ensure_admin(session_factory(make_engine(settings.resolved_database_url)), "admin-pass-123")
        with TestClient(
            create_app(settings, job_queue=NoQueue()), base_url="http://enclave.local"
        ) as client:
            yield client, provider


def _sign_in(client: TestClient) -> httpx.Response:
    """Browser steps: Enclave -> provider /authorize -> back to Enclave's callback."""
    client.cookies.clear()
    start = client.get("/api/auth/oidc/login", follow_redirects=False)
    assert start.status_code == 302
    authorize_url = start.headers["location"]
    query = parse_qs(urlsplit(authorize_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert "code_verifier" not in authorize_url
    back = httpx.get(authorize_url, follow_redirects=False, trust_env=False)
    assert back.status_code in (302, 307)
    callback = back.headers["location"]
    assert callback.startswith(CALLBACK)
    return client.get(callback.removeprefix("http://enclave.local"), follow_redirects=False)


def test_authorization_code_flow_with_pkce_logs_in_with_groups_from_the_claim(setup):
    client, provider = setup
    provider.user = ProviderUser("sub-1", "olga", ["hr", "it-admins"])
    done = _sign_in(client)
    assert done.status_code == 302 and done.headers["location"] == "/"
    session = done.cookies["enclave_session"]
    me = client.get("/api/me", cookies={"enclave_session": session}).json()
    assert (
        me["username"] == "olga" and me["groups"] == ["hr", "it-admins"] and me["role"] == "admin"
    )
    verifier = provider.token_requests[-1]["code_verifier"]
    assert len(verifier) >= 43  # PKCE: the verifier only ever went to the token endpoint
    local = client.post("/api/auth/login", json={"username": "olga", "password": "!external:oidc"})
    assert local.status_code == 401  # no password login for an SSO account


def test_a_replayed_state_a_wrong_nonce_and_a_refusal_are_401(setup):
    client, provider = setup
    provider.user = ProviderUser("sub-2", "piet", ["finance"])
    client.cookies.clear()
    start = client.get("/api/auth/oidc/login", follow_redirects=False).headers["location"]
    callback = httpx.get(start, follow_redirects=False, trust_env=False).headers["location"]
    path = callback.removeprefix("http://enclave.local")
    assert client.get(path, follow_redirects=False).status_code == 302
    assert client.get(path, follow_redirects=False).status_code == 401  # state used up
    provider.tamper_nonce = True
    try:
        assert _sign_in(client).status_code == 401
    finally:
        provider.tamper_nonce = False
    provider.user = None
    refused = _sign_in(client)
    assert refused.status_code == 401 and "access_denied" in refused.json()["error"]["message"]


def test_oidc_routes_are_404_when_not_configured(tmp_path):
    settings = Settings(data_dir=tmp_path, frontend_dir=tmp_path / "none")
    migrate(settings.resolved_database_url)
    with TestClient(create_app(settings, job_queue=NoQueue())) as client:
        response = client.get("/api/auth/oidc/login", follow_redirects=False)
        assert (
            response.status_code == 404 and "not configured" in response.json()["error"]["message"]
        )
