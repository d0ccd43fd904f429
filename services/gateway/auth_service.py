"""Accounts and sessions: log in, resolve a token to a user, create the first admin."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from services.db import ApiToken, Group, User, UserGroup, utcnow
from services.gateway.errors import Unauthorized
from services.gateway.security import (
    generate_password,
    hash_password,
    new_token,
    token_digest,
    verify_password,
)

ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class CurrentUser:
    """The caller of a request, with the group names that decide what they may read."""

    id: str
    username: str
    role: str
    groups: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_manage_documents(self) -> bool:
        return self.role in ("admin", "editor")


def user_groups(session, user_id: str) -> tuple[str, ...]:
    rows = session.scalars(
        select(Group.name)
        .join(UserGroup, UserGroup.group_id == Group.id)
        .where(UserGroup.user_id == user_id)
        .order_by(Group.name)
    )
    return tuple(rows)


def ensure_admin(sessions: sessionmaker, password: str | None) -> str | None:
    """Create the ``admin`` account if missing; return the password if we generated it."""
    with sessions.begin() as session:
        if session.scalar(select(User).where(User.username == ADMIN_USERNAME)) is not None:
            return None
        generated = None if password else generate_password()
        session.add(
            User(
                username=ADMIN_USERNAME,
                password_hash=hash_password(password or generated),
                role="admin",
            )
        )
    return generated


class AuthService:
    """Logs users in and turns a bearer token or session cookie back into a ``CurrentUser``."""

    def __init__(self, sessions: sessionmaker, session_ttl_hours: int):
        self._sessions = sessions
        self._ttl = timedelta(hours=session_ttl_hours)

    def login(self, username: str, password: str) -> tuple[str, CurrentUser]:
        with self._sessions.begin() as session:
            user = session.scalar(select(User).where(User.username == username))
            if user is None or not verify_password(password, user.password_hash):
                raise Unauthorized("wrong username or password")
            token = new_token()
            now = utcnow()
            session.execute(delete(ApiToken).where(ApiToken.expires_at < now))
            session.add(
                ApiToken(
                    user_id=user.id, token_hash=token_digest(token), expires_at=now + self._ttl
                )
            )
            return token, CurrentUser(
                user.id, user.username, user.role, user_groups(session, user.id)
            )

    def authenticate(self, token: str | None) -> CurrentUser:
        if not token:
            raise Unauthorized(
                "log in first: send 'Authorization: Bearer <token>' or the session cookie"
            )
        with self._sessions() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
            if row is None or _aware(row.expires_at) < utcnow():
                raise Unauthorized("session expired or unknown token; log in again")
            user = session.get(User, row.user_id)
            if user is None:
                raise Unauthorized("the account of this session no longer exists")
            return CurrentUser(user.id, user.username, user.role, user_groups(session, user.id))

    def logout(self, token: str) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(ApiToken).where(ApiToken.token_hash == token_digest(token)))


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; we only ever store UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
