"""The one place that encodes who may read a chunk and formats the filter every query uses.

A chunk carries its document's groups. Documents uploaded with no groups are public.
Both stores keep the ACL next to the chunk and apply the caller's scope INSIDE the query
(Chroma ``where``, SQL ``WHERE``), so a chunk the caller may not read is never returned,
ranked or shown to the model. This module is stdlib-only: ingest writes with
``chunk_acl_metadata``/``chunk_acl_column`` and the searchers read with ``AccessScope``,
so the two encodings cannot drift apart.

Encodings:
- Chroma metadata: ``public: bool`` and one ``g_<group>: True`` key per group.
- SQL: ``is_public`` INTEGER and ``acl`` TEXT ``"|<g1>|<g2>|"`` with each name
  percent-encoded, so ``|`` never occurs inside a name and ``instr`` matches exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

PUBLIC_KEY = "public"
GROUP_KEY_PREFIX = "g_"
MAX_GROUP_NAME = 100


class AccessError(ValueError):
    """A group name that cannot be used in an access list."""


def normalise_groups(groups: Iterable[str] | None) -> frozenset[str]:
    """Strip and validate group names; empty names are an error, duplicates collapse."""
    cleaned: set[str] = set()
    for group in groups or ():
        if not isinstance(group, str):
            raise AccessError(f"Group names must be strings, not {type(group).__name__}.")
        name = group.strip()
        if not name:
            raise AccessError("Group names must not be empty.")
        if len(name) > MAX_GROUP_NAME or any(ord(ch) < 32 for ch in name):
            raise AccessError(
                f"Invalid group name {name[:40]!r}: at most {MAX_GROUP_NAME} printable characters."
            )
        cleaned.add(name)
    return frozenset(cleaned)


def group_key(group: str) -> str:
    """Chroma metadata key that marks a chunk readable by ``group``."""
    return f"{GROUP_KEY_PREFIX}{group}"


def _acl_token(group: str) -> str:
    return f"|{quote(group, safe='')}|"


def chunk_acl_metadata(groups: Iterable[str]) -> dict[str, bool]:
    """Chroma metadata for a chunk of a document shared with ``groups`` (none = public)."""
    names = normalise_groups(groups)
    if not names:
        return {PUBLIC_KEY: True}
    return {PUBLIC_KEY: False, **{group_key(g): True for g in sorted(names)}}


def chunk_acl_column(groups: Iterable[str]) -> tuple[int, str]:
    """(is_public, acl) column values for the lexical index."""
    names = normalise_groups(groups)
    if not names:
        return 1, ""
    return 0, "|" + "|".join(quote(g, safe="") for g in sorted(names)) + "|"


def narrowest_groups(old: Iterable[str], new: Iterable[str]) -> frozenset[str] | None:
    """Groups that may read a document both before and after a change of its groups.

    ``None`` means public on both sides; an empty set means no group (admins only). A
    permission change writes this first and the new groups second, so while it runs no
    one outside both the old and the new readers can see a chunk.
    """
    before, after = normalise_groups(old), normalise_groups(new)
    if not before and not after:
        return None
    if not before or not after:
        return before or after
    return before & after


def restricted_acl_metadata(groups: frozenset[str] | None) -> dict[str, bool]:
    """Chroma ACL metadata where an empty set means admins only (``None``: public)."""
    if groups is None:
        return {PUBLIC_KEY: True}
    return {PUBLIC_KEY: False, **{group_key(g): True for g in sorted(normalise_groups(groups))}}


def restricted_acl_column(groups: frozenset[str] | None) -> tuple[int, str]:
    """Lexical ACL columns where an empty set means admins only (``None``: public)."""
    if groups is None:
        return 1, ""
    names = sorted(normalise_groups(groups))
    return 0, ("|" + "|".join(quote(g, safe="") for g in names) + "|") if names else ""


@dataclass(frozen=True)
class AccessScope:
    """What a caller may read: ``groups=None`` sees everything (admins); else public + groups."""

    groups: frozenset[str] | None

    @classmethod
    def everything(cls) -> AccessScope:
        return cls(groups=None)

    @classmethod
    def for_groups(cls, groups: Iterable[str]) -> AccessScope:
        return cls(groups=normalise_groups(groups))

    def __post_init__(self) -> None:
        if self.groups is not None:
            object.__setattr__(self, "groups", normalise_groups(self.groups))

    def may_read(self, groups: Iterable[str]) -> bool:
        """Whether a document shared with ``groups`` is visible (for non-query checks)."""
        names = normalise_groups(groups)
        return self.groups is None or not names or bool(names & self.groups)

    def chroma_where(self) -> dict[str, Any] | None:
        """Chroma ``where`` filter, or None when the caller sees everything."""
        if self.groups is None:
            return None
        clauses: list[dict[str, Any]] = [{PUBLIC_KEY: True}]
        clauses += [{group_key(g): True} for g in sorted(self.groups)]
        return clauses[0] if len(clauses) == 1 else {"$or": clauses}

    def sql_where(
        self, public_column: str = "is_public", acl_column: str = "acl"
    ) -> tuple[str, list[str]]:
        """SQL boolean expression and its parameters; ``("1 = 1", [])`` for everything."""
        if self.groups is None:
            return "1 = 1", []
        tests = [f"instr({acl_column}, ?) > 0" for _ in sorted(self.groups)]
        clause = " OR ".join([f"{public_column} = 1", *tests])
        return f"({clause})", [_acl_token(g) for g in sorted(self.groups)]

    def postgres_where(
        self, public_column: str = "is_public", acl_column: str = "acl"
    ) -> tuple[str, dict[str, str]]:
        """The same filter for PostgreSQL with named parameters (``:acl_0``...); ``strpos`` for ``instr``."""
        if self.groups is None:
            return "TRUE", {}
        tokens = {f"acl_{i}": _acl_token(g) for i, g in enumerate(sorted(self.groups))}
        tests = [f"strpos({acl_column}, :{name}) > 0" for name in tokens]
        clause = " OR ".join([f"{public_column} = 1", *tests])
        return f"({clause})", tokens
