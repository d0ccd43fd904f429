"""The one place that turns a user into an access scope (Onyx style).

Every read path (search, chat, document listing) asks this module what the caller may
see; the scope is then enforced inside the retrieval query, never after the fact.
"""

from __future__ import annotations

from collections.abc import Iterable

from ingest.stores.acl import AccessScope
from services.gateway.auth_service import CurrentUser


def scope_for(user: CurrentUser) -> AccessScope:
    """All documents for admins, else public ones plus the user's groups."""
    return AccessScope(groups=None if user.is_admin else frozenset(user.groups))


def may_read(user: CurrentUser, document_groups: Iterable[str] | None) -> bool:
    """Whether ``user`` may see a document shared with ``document_groups`` (the retrieval filter's rule)."""
    return scope_for(user).may_read(document_groups or ())
