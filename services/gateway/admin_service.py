"""Admin operations: groups, users and their memberships, the audit trail."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.db import ROLES, AuditEntry, Group, User, UserGroup
from services.gateway.auth_service import user_groups
from services.gateway.errors import BadRequest, Conflict
from services.gateway.security import hash_password


class AdminService:
    def __init__(self, sessions: sessionmaker):
        self._sessions = sessions

    def create_group(self, name: str) -> dict:
        name = name.strip()
        if not name or "," in name:
            raise BadRequest("group name must be non-empty and contain no comma")
        with self._sessions.begin() as session:
            if session.scalar(select(Group).where(Group.name == name)) is not None:
                raise Conflict(f"group {name!r} already exists")
            group = Group(name=name)
            session.add(group)
            session.flush()
            return {"id": group.id, "name": group.name}

    def list_groups(self) -> list[dict]:
        with self._sessions() as session:
            return [
                {"id": g.id, "name": g.name}
                for g in session.scalars(select(Group).order_by(Group.name))
            ]

    def create_user(self, username: str, password: str, role: str, groups: list[str]) -> dict:
        username = username.strip()
        if not username:
            raise BadRequest("username must not be empty")
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise BadRequest("password must have at least 8 characters")
        with self._sessions.begin() as session:
            if session.scalar(select(User).where(User.username == username)) is not None:
                raise Conflict(f"user {username!r} already exists")
            found = {
                g.name: g for g in session.scalars(select(Group).where(Group.name.in_(groups)))
            }
            missing = sorted(set(groups) - set(found))
            if missing:
                raise BadRequest(f"unknown group(s): {', '.join(missing)}; create them first")
            user = User(username=username, password_hash=hash_password(password), role=role)
            session.add(user)
            session.flush()
            session.add_all(UserGroup(user_id=user.id, group_id=g.id) for g in found.values())
            session.flush()
            return _user_json(session, user)

    def list_users(self) -> list[dict]:
        with self._sessions() as session:
            return [
                _user_json(session, u)
                for u in session.scalars(select(User).order_by(User.username))
            ]

    def audit(self, limit: int) -> list[dict]:
        with self._sessions() as session:
            rows = session.scalars(
                select(AuditEntry).order_by(AuditEntry.created_at.desc()).limit(limit)
            )
            return [
                {
                    "id": a.id,
                    "username": a.username,
                    "action": a.action,
                    "query": a.query,
                    "chunk_ids": a.chunk_ids,
                    "created_at": a.created_at.isoformat(),
                }
                for a in rows
            ]


def _user_json(session, user: User) -> dict:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "groups": list(user_groups(session, user.id)),
    }
