"""Access scope from a user: admins see everything, others their groups (and public docs)."""

from __future__ import annotations

from services.gateway.access import may_read, scope_for
from services.gateway.auth_service import CurrentUser

ADMIN = CurrentUser("1", "root", "admin", ("hr",))
EMPLOYEE = CurrentUser("2", "emma", "employee", ("hr", "sales"))
LONER = CurrentUser("3", "lou", "employee", ())


def test_admin_scope_is_unrestricted():
    assert scope_for(ADMIN).groups is None


def test_employee_scope_is_their_groups():
    assert scope_for(EMPLOYEE).groups == frozenset({"hr", "sales"})
    assert scope_for(LONER).groups == frozenset()


def test_document_visibility_follows_the_same_rule():
    assert may_read(LONER, [])  # no groups: everyone
    assert may_read(EMPLOYEE, ["hr", "legal"])
    assert not may_read(EMPLOYEE, ["legal"])
    assert not may_read(LONER, ["legal"])
    assert may_read(ADMIN, ["legal"])
