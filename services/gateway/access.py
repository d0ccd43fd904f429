"""The one place that turns a user into an access scope (Onyx style), and names groups.

Every read path (search, chat, document listing) asks this module what the caller may
see; the scope is then enforced inside the retrieval query, never after the fact. Group
names are checked here with the access layer's own rule (``normalise_groups``), for the
admin API, uploads and permission changes alike, so a name one part accepts can never
break another.
"""

from __future__ import annotations

from collections.abc import Iterable

from ingest.stores.acl import AccessError, AccessScope, normalise_groups
from services.gateway.auth_service import CurrentUser
from services.gateway.errors import BadRequest


def checked_groups(names: Iterable[str]) -> list[str]:
    """Valid group names, stripped, unique and sorted; 400 naming the rule otherwise."""
    try:
        return sorted(normalise_groups(names))
    except AccessError as exc:
        raise BadRequest(str(exc)) from exc


def parse_groups(raw: str | None) -> list[str]:
    """``"hr, legal"`` -> ``["hr", "legal"]``; empty means everyone (public)."""
    return checked_groups(part for part in (raw or "").split(",") if part.strip())


def _valid_only(names: Iterable[str]) -> frozenset[str]:
    """Names that pass the rule (an invalid one, from older data, grants nothing)."""
    kept: set[str] = set()
    for name in names:
        try:
            kept |= normalise_groups([name])
        except AccessError:
            continue
    return frozenset(kept)


def scope_for(user: CurrentUser) -> AccessScope:
    """All documents for admins, else public ones plus the user's groups."""
    return AccessScope(groups=None if user.is_admin else _valid_only(user.groups))


def may_read(user: CurrentUser, document_groups: Iterable[str] | None) -> bool:
    """Whether ``user`` may see a document shared with ``document_groups`` (the retrieval filter's rule).

    A document whose stored groups break the naming rule is readable by admins only:
    never public by accident, never a 500 for everyone.
    """
    if user.is_admin:
        return True
    try:
        return scope_for(user).may_read(document_groups or ())
    except AccessError:
        return False
