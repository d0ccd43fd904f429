"""The first admin: created once, from ENCLAVE_ADMIN_PASSWORD or with a generated password."""

from __future__ import annotations

from services.db import make_engine, migrate, session_factory
from services.gateway.auth_service import AuthService, ensure_admin


def _sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'enclave.db'}"
    migrate(url)
    return session_factory(make_engine(url))


def test_generated_admin_password_is_returned_once_and_works(tmp_path):
    sessions = _sessions(tmp_path)
    generated = ensure_admin(sessions, None)
    assert generated and len(generated) >= 12
    assert ensure_admin(sessions, None) is None  # second start: nothing new to print
    token, user = AuthService(sessions, 1).login("admin", generated)
    assert user.is_admin and AuthService(sessions, 1).authenticate(token).username == "admin"


def test_configured_admin_password_is_used_and_not_printed(tmp_path):
    sessions = _sessions(tmp_path)
    assert ensure_admin(sessions, "from-the-environment") is None
    _, user = AuthService(sessions, 1).login("admin", "from-the-environment")
    assert user.role == "admin"


def test_expired_sessions_are_refused(tmp_path):
    import pytest

    from services.gateway.errors import Unauthorized

    sessions = _sessions(tmp_path)
    ensure_admin(sessions, "pw-123456")
    token, _ = AuthService(sessions, 0).login("admin", "pw-123456")  # lifetime 0 h: already expired
    with pytest.raises(Unauthorized):
        AuthService(sessions, 0).authenticate(token)
