"""The first admin: created once, from ENCLAVE_ADMIN_PASSWORD or with a generated password."""

from __future__ import annotations

import asyncio

from services.db import make_engine, migrate, session_factory
from services.gateway.auth_service import AuthService, ensure_admin
from services.gateway.rate_limits import LoginThrottle
from services.gateway.security import PasswordHasher


def _auth(sessions, ttl_hours: int) -> AuthService:
    return AuthService(sessions, ttl_hours, PasswordHasher(1), LoginThrottle(5, 60, 50), 1)


def _login(sessions, ttl_hours: int, username: str, password: str):
    return asyncio.run(_auth(sessions, ttl_hours).login(username, password, "127.0.0.1"))


def _authenticate(sessions, ttl_hours: int, token: str):
    return asyncio.run(_auth(sessions, ttl_hours).authenticate(token))


def _sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'enclave.db'}"
    migrate(url)
    return session_factory(make_engine(url))


def test_generated_admin_password_is_returned_once_and_works(tmp_path):
    sessions = _sessions(tmp_path)
    generated = ensure_admin(sessions, None)
    assert generated and len(generated) >= 12
    assert ensure_admin(sessions, None) is None  # second start: nothing new to print
    token, user = _login(sessions, 1, "admin", generated)
    assert user.is_admin and _authenticate(sessions, 1, token).username == "admin"


def test_configured_admin_password_is_used_and_not_printed(tmp_path):
    sessions = _sessions(tmp_path)
    assert ensure_admin(sessions, "from-the-environment") is None
    _, user = _login(sessions, 1, "admin", "from-the-environment")
    assert user.role == "admin"


def test_expired_sessions_are_refused(tmp_path):
    import pytest

    from services.gateway.errors import Unauthorized

    sessions = _sessions(tmp_path)
    ensure_admin(sessions, "pw-123456")
    token, _ = _login(sessions, 0, "admin", "pw-123456")  # lifetime 0 h: already expired
    with pytest.raises(Unauthorized):
        _authenticate(sessions, 0, token)
