"""The single place that formats access filters: both encodings and both query forms."""

from __future__ import annotations

import sqlite3

import pytest

from ingest.stores.acl import AccessError, AccessScope, chunk_acl_column, chunk_acl_metadata


def test_admin_scope_has_no_filter():
    scope = AccessScope(None)
    assert scope.chroma_where() is None
    assert scope.sql_where() == ("1 = 1", [])


def test_no_groups_means_public_only():
    scope = AccessScope(frozenset())
    assert scope.chroma_where() == {"public": True}
    assert scope.sql_where("p", "a") == ("(p = 1)", [])


def test_groups_are_or_ed_with_public():
    scope = AccessScope.for_groups(["legal", " hr "])
    assert scope.chroma_where() == {"$or": [{"public": True}, {"g_hr": True}, {"g_legal": True}]}
    sql, params = scope.sql_where("c.is_public", "c.acl")
    assert sql == "(c.is_public = 1 OR instr(c.acl, ?) > 0 OR instr(c.acl, ?) > 0)"
    assert params == ["|hr|", "|legal|"]


def test_write_side_encodings():
    assert chunk_acl_metadata([]) == {"public": True}
    assert chunk_acl_metadata(["hr", "legal", "hr"]) == {
        "public": False,
        "g_hr": True,
        "g_legal": True,
    }
    assert chunk_acl_column([]) == (1, "")
    assert chunk_acl_column(["b|c", "a b"]) == (0, "|a%20b|b%7Cc|")


@pytest.mark.parametrize(
    "doc_groups, scope_groups, visible",
    [
        ([], frozenset(), True),
        (["hr"], frozenset(), False),
        (["hr"], frozenset({"hr"}), True),
        (["hr", "x"], frozenset({"x"}), True),
        (["a|b"], frozenset({"a"}), False),
        (["hr"], None, True),
    ],
)
def test_sql_filter_matches_python_rule(doc_groups, scope_groups, visible):
    scope = AccessScope(scope_groups)
    assert scope.may_read(doc_groups) is visible
    conn = sqlite3.connect(":memory:")
    is_public, acl = chunk_acl_column(doc_groups)
    sql, params = scope.sql_where("p", "a")
    got = conn.execute(
        f"SELECT 1 FROM (SELECT ? AS p, ? AS a) WHERE {sql}", [is_public, acl, *params]
    ).fetchall()
    assert bool(got) is visible


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "x" * 101])
def test_bad_group_names_are_rejected(bad):
    with pytest.raises(AccessError):
        AccessScope.for_groups([bad])
    with pytest.raises(AccessError):
        chunk_acl_metadata([bad])
