"""External identity: LDAP bind with group lookup, and the local account an external user gets.

An external user is provisioned on each successful login: the account is created if
missing (with an unusable password hash, so only the directory can log it in), its
groups are replaced by the directory's (names that break the group rule are skipped,
missing groups are created) and its role follows ``auth_external_admin_group`` /
``auth_external_editor_group``. Changed groups or role end the user's older sessions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from ingest.stores.acl import AccessError, normalise_groups
from services.db import Group, User, UserGroup
from services.gateway.auth_service import revoke_sessions, user_groups
from services.gateway.security import EXTERNAL_HASH_PREFIX, is_external_hash
from services.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalIdentity:
    username: str
    groups: tuple[str, ...]
    source: str  # "ldap" | "oidc"


def role_for(groups: tuple[str, ...], settings: Settings) -> str:
    if settings.auth_external_admin_group and settings.auth_external_admin_group in groups:
        return "admin"
    if settings.auth_external_editor_group and settings.auth_external_editor_group in groups:
        return "editor"
    return "employee"


def provision(sessions: sessionmaker, identity: ExternalIdentity, settings: Settings) -> str:
    """The local user id for ``identity``, created or brought in line with the directory."""
    names: list[str] = []
    for name in identity.groups:
        try:
            names += sorted(normalise_groups([name]))
        except AccessError:
            log.warning("skipping an external group whose name breaks the group rule")
    role = role_for(identity.groups, settings)
    with sessions.begin() as session:
        user = session.scalar(select(User).where(User.username == identity.username))
        if user is None:
            user = User(
                username=identity.username,
                password_hash=f"{EXTERNAL_HASH_PREFIX}{identity.source}",
                role=role,
            )
            session.add(user)
            session.flush()
        elif not is_external_hash(user.password_hash):
            raise PermissionError("a local account of that name exists")
        existing = {g.name: g for g in session.scalars(select(Group).where(Group.name.in_(names)))}
        for name in names:
            if name not in existing:
                existing[name] = Group(name=name)
                session.add(existing[name])
        session.flush()
        changed = user.role != role or set(user_groups(session, user.id)) != set(names)
        if changed:
            user.role = role
            session.execute(delete(UserGroup).where(UserGroup.user_id == user.id))
            session.add_all(UserGroup(user_id=user.id, group_id=existing[n].id) for n in names)
            revoke_sessions(session, user.id)
        return user.id


class LdapAuthenticator:
    """Bind as the user (their password is checked by the directory), then read their groups."""

    def __init__(self, settings: Settings):
        self._settings = settings

    def authenticate(self, username: str, password: str) -> ExternalIdentity | None:
        """The user's identity on a successful bind; None for wrong credentials or no such user."""
        import ldap3
        from ldap3.core.exceptions import LDAPException
        from ldap3.utils.conv import escape_filter_chars
        from ldap3.utils.dn import escape_rdn

        settings = self._settings
        if not password:
            return None  # an empty password would be an anonymous bind, which "succeeds"
        user_dn = settings.auth_ldap_user_dn.replace("{username}", escape_rdn(username))
        server = ldap3.Server(settings.auth_ldap_url, connect_timeout=5)
        try:
            connection = ldap3.Connection(
                server, user=user_dn, password=password, receive_timeout=10, read_only=True
            )
            if not connection.bind():
                return None
            query = settings.auth_ldap_group_filter.replace(
                "{user_dn}", escape_filter_chars(user_dn)
            )
            attribute = settings.auth_ldap_group_attribute
            connection.search(settings.auth_ldap_group_base, query, attributes=[attribute])
            groups = tuple(
                sorted(
                    str(value)
                    for entry in connection.entries
                    for value in (entry[attribute].values if attribute in entry else [])
                )
            )
            connection.unbind()
        except LDAPException as exc:
            log.warning("LDAP login failed: %s", type(exc).__name__)
            return None
        return ExternalIdentity(username, groups, "ldap")


def ldap_login(sessions: sessionmaker, settings: Settings):  # noqa: ANN201 - a closure
    """``external_login`` for ``AuthService``: LDAP bind, then provision; None on failure."""
    authenticator = LdapAuthenticator(settings)

    def login(username: str, password: str) -> str | None:
        identity = authenticator.authenticate(username, password)
        if identity is None:
            return None
        try:
            return provision(sessions, identity, settings)
        except PermissionError:
            log.warning("LDAP user matches a local account; refusing the LDAP login")
            return None

    return login
