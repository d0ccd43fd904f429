"""Admin operations: groups, users and their whole lifecycle (shared by the API and the CLI).

Whatever changes what a user may do or see (password, disable, role, groups, deletion)
ends every session of theirs in the same transaction, so the next request re-authenticates
under the new rules instead of riding an old session for hours.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from services.db import ROLES, Group, User, UserGroup
from services.gateway.access import checked_groups
from services.gateway.auth_service import revoke_sessions, user_groups
from services.gateway.errors import BadRequest, Conflict, NotFound


class AdminService:
    def __init__(self, sessions: sessionmaker):
        self._sessions = sessions

    # --- groups ------------------------------------------------------------------------
    def create_group(self, name: str) -> dict:
        names = checked_groups([name])
        if not names:
            raise BadRequest("group name must not be empty")
        name = names[0]
        if "," in name:
            raise BadRequest("group name must contain no comma (uploads list groups with commas)")
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

    def delete_group(self, name: str) -> dict:
        """Remove a group; its members' sessions end. Documents shared only with it become admin-only."""
        with self._sessions.begin() as session:
            group = session.scalar(select(Group).where(Group.name == name))
            if group is None:
                raise NotFound(f"no group named {name!r}")
            members = list(
                session.scalars(select(UserGroup.user_id).where(UserGroup.group_id == group.id))
            )
            session.execute(delete(UserGroup).where(UserGroup.group_id == group.id))
            session.delete(group)
            for user_id in members:
                revoke_sessions(session, user_id)
            return {"name": name, "deleted": True}

    # --- users -------------------------------------------------------------------------
    def create_user(self, username: str, password_hash: str, role: str, groups: list[str]) -> dict:
        username = username.strip()
        if not username:
            raise BadRequest("username must not be empty")
        _check_role(role)
        with self._sessions.begin() as session:
            if session.scalar(select(User).where(User.username == username)) is not None:
                raise Conflict(f"user {username!r} already exists")
            found = _existing_groups(session, groups)
            user = User(username=username, password_hash=password_hash, role=role)
            session.add(user)
            session.flush()
            session.add_all(UserGroup(user_id=user.id, group_id=g.id) for g in found)
            session.flush()
            return user_json(session, user)

    def list_users(self) -> list[dict]:
        with self._sessions() as session:
            return [
                user_json(session, u) for u in session.scalars(select(User).order_by(User.username))
            ]

    def update_user(
        self,
        username: str,
        *,
        actor: str | None = None,
        role: str | None = None,
        groups: list[str] | None = None,
        disabled: bool | None = None,
    ) -> dict:
        """Change role, groups and/or disabled; any change ends the user's sessions."""
        if role is not None:
            _check_role(role)
        with self._sessions.begin() as session:
            user = _user(session, username)
            if actor == user.username and (disabled or (role is not None and role != "admin")):
                raise BadRequest("you cannot disable or demote your own account")
            changed = False
            if role is not None and role != user.role:
                user.role, changed = role, True
            if disabled is not None and disabled != user.disabled:
                user.disabled, changed = disabled, True
            if groups is not None:
                wanted = {g.id for g in _existing_groups(session, groups)}
                current = set(
                    session.scalars(select(UserGroup.group_id).where(UserGroup.user_id == user.id))
                )
                if wanted != current:
                    session.execute(delete(UserGroup).where(UserGroup.user_id == user.id))
                    session.add_all(UserGroup(user_id=user.id, group_id=g) for g in sorted(wanted))
                    changed = True
            if changed:
                revoke_sessions(session, user.id)
            session.flush()
            return user_json(session, user)

    def set_password(self, username: str, password_hash: str) -> dict:
        """Reset a password (admin); every session of the user ends."""
        with self._sessions.begin() as session:
            user = _user(session, username)
            user.password_hash = password_hash
            revoke_sessions(session, user.id)
            return user_json(session, user)

    def revoke_sessions(self, username: str) -> dict:
        with self._sessions.begin() as session:
            user = _user(session, username)
            return {"username": user.username, "revoked": revoke_sessions(session, user.id)}

    def delete_user(self, username: str, actor: str | None = None) -> dict:
        """Delete an account (sessions and memberships go with it; the audit trail stays)."""
        if actor == username:
            raise BadRequest("you cannot delete your own account")
        with self._sessions.begin() as session:
            user = _user(session, username)
            revoke_sessions(session, user.id)
            session.execute(delete(UserGroup).where(UserGroup.user_id == user.id))
            session.delete(user)
            return {"username": username, "deleted": True}


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}")


def _user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user named {username!r}")
    return user


def _existing_groups(session: Session, groups: list[str]) -> list[Group]:
    names = checked_groups(groups)
    found = {g.name: g for g in session.scalars(select(Group).where(Group.name.in_(names)))}
    missing = sorted(set(names) - set(found))
    if missing:
        raise BadRequest(f"unknown group(s): {', '.join(missing)}; create them first")
    return [found[n] for n in names]


def user_json(session: Session, user: User) -> dict:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "groups": list(user_groups(session, user.id)),
        "disabled": bool(user.disabled),
    }
