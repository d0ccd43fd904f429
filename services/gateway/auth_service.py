"""Accounts and sessions: log in, resolve a token to a user, end sessions, create the first admin.

Both halves of a login that cost time stay off the shared thread pool: bcrypt runs on
``PasswordHasher``'s executor and token lookups on this service's own small executor, so a
flood of logins (or of requests with tokens) cannot starve every other endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from services.db import ApiToken, Group, User, UserGroup, utcnow
from services.gateway.errors import Unauthorized
from services.gateway.rate_limits import LoginThrottle
from services.gateway.security import (
    PasswordHasher,
    generate_password,
    hash_password,
    is_external_hash,
    new_token,
    token_digest,
)

ADMIN_USERNAME = "admin"
T = TypeVar("T")


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


def user_groups(session: Session, user_id: str) -> tuple[str, ...]:
    rows = session.scalars(
        select(Group.name)
        .join(UserGroup, UserGroup.group_id == Group.id)
        .where(UserGroup.user_id == user_id)
        .order_by(Group.name)
    )
    return tuple(rows)


def revoke_sessions(session: Session, user_id: str) -> int:
    """End every session and token of a user (password change, disable, new groups or role)."""
    result = session.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


def csrf_token_for(session_token: str) -> str:
    """The CSRF token that goes with a session: derived, so nothing more is stored.

    Only a page that could read the (non-HttpOnly) CSRF cookie or the login reply knows
    it; another site's form can send the session cookie but not this header.
    """
    return hashlib.sha256(b"enclave-csrf:" + session_token.encode()).hexdigest()


def ensure_admin(sessions: sessionmaker, password: str | None) -> str | None:
    """Create the ``admin`` account if missing; return the password if we generated it."""
    with sessions.begin() as session:
        if session.scalar(select(User).where(User.username == ADMIN_USERNAME)) is not None:
            return None
        generated = None if password else generate_password()
        session.add(
            User(
                username=ADMIN_USERNAME,
                password_hash=hash_password(password or generated or ""),
                role="admin",
            )
        )
    return generated


class AuthService:
    """Logs users in and turns a bearer token or session cookie back into a ``CurrentUser``."""

    def __init__(
        self,
        sessions: sessionmaker,
        session_ttl_hours: int,
        hasher: PasswordHasher,
        throttle: LoginThrottle,
        threads: int = 8,
        external_login: Callable[[str, str], str | None] | None = None,
    ):
        """``external_login(username, password)`` returns a provisioned user id or None (LDAP)."""
        self._sessions = sessions
        self._ttl = timedelta(hours=session_ttl_hours)
        self.hasher = hasher
        self._throttle = throttle
        self._executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="auth")
        self._external_login = external_login

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """Run blocking DB work on this service's executor, not the shared thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def login(self, username: str, password: str, address: str) -> tuple[str, CurrentUser]:
        """A new session for a right password; 401 otherwise, 429 while locked out.

        An unknown username costs the same bcrypt check as a known one.
        """
        self._throttle.check(username, address)
        account = await self._run(self._account, username)
        local = account is not None and not is_external_hash(account.password_hash)
        local_hash = account.password_hash if account is not None and local else None
        matched = await self.hasher.verify(password, local_hash)
        if not local and self._external_login is not None:
            user_id = await self._run(self._external_login, username.strip(), password)
            if user_id is not None:
                self._throttle.succeeded(username)
                return await self._run(self._new_session, user_id)
        if not matched or account is None:
            self._throttle.failed(username, address)
            raise Unauthorized("wrong username or password")
        if account.disabled:
            raise Unauthorized("this account is disabled; ask an administrator")
        self._throttle.succeeded(username)
        return await self._run(self._new_session, account.id)

    def _account(self, username: str) -> User | None:
        with self._sessions() as session:
            return session.scalar(select(User).where(User.username == username.strip()))

    def _new_session(self, user_id: str) -> tuple[str, CurrentUser]:
        token = new_token()
        now = utcnow()
        with self._sessions.begin() as session:
            user = session.get(User, user_id)
            if user is None or user.disabled:
                raise Unauthorized("wrong username or password")
            session.execute(delete(ApiToken).where(ApiToken.expires_at < now))
            session.add(
                ApiToken(
                    user_id=user.id, token_hash=token_digest(token), expires_at=now + self._ttl
                )
            )
            return token, CurrentUser(
                user.id, user.username, user.role, user_groups(session, user.id)
            )

    async def session_for(self, user_id: str) -> tuple[str, CurrentUser]:
        """A new session for an already authenticated user (an OIDC callback)."""
        return await self._run(self._new_session, user_id)

    async def authenticate(self, token: str | None) -> CurrentUser:
        if not token:
            raise Unauthorized(
                "log in first: send 'Authorization: Bearer <token>' or the session cookie"
            )
        return await self._run(self._resolve, token)

    def _resolve(self, token: str) -> CurrentUser:
        with self._sessions() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
            if row is None or _aware(row.expires_at) < utcnow():
                raise Unauthorized("session expired or unknown token; log in again")
            user = session.get(User, row.user_id)
            if user is None or user.disabled:
                raise Unauthorized("the account of this session no longer exists or is disabled")
            return CurrentUser(user.id, user.username, user.role, user_groups(session, user.id))

    async def logout(self, token: str) -> None:
        await self._run(self._end_session, token)

    def _end_session(self, token: str) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(ApiToken).where(ApiToken.token_hash == token_digest(token)))

    async def change_password(self, user: CurrentUser, current: str, new: str) -> None:
        """The caller's own password; every session of theirs ends (they log in again)."""
        account = await self._run(self._account, user.username)
        if account is None or not await self.hasher.verify(current, account.password_hash):
            raise Unauthorized("the current password is wrong")
        new_hash = await self.hasher.hash(new)
        await self._run(self._store_password, account.id, new_hash)

    def _store_password(self, user_id: str, password_hash: str) -> None:
        with self._sessions.begin() as session:
            user = session.get(User, user_id)
            if user is not None:
                user.password_hash = password_hash
                revoke_sessions(session, user_id)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.hasher.close()


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; we only ever store UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
