"""``enclave admin ...``: users, roles, groups and sessions, straight on the database.

For the operator on the server (the API's /api/admin needs a working admin login; this
does not: it is also how to recover a locked-out or forgotten admin). The same
``AdminService`` as the API does the work, so the rules (group names, roles, sessions
ending on every change) are the same. Passwords are generated and printed once unless
given with ``--password`` (which other users on the host may see in the process list).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from services.settings import Settings


def _service() -> Any:
    from services.db import make_engine, migrate, session_factory
    from services.gateway.admin_service import AdminService

    settings = Settings()
    migrate(settings.resolved_database_url)
    return AdminService(session_factory(make_engine(settings.resolved_database_url)))


def _groups(raw: str | None) -> list[str]:
    return [part for part in (raw or "").split(",") if part.strip()]


def _password(given: str | None) -> tuple[str, bool]:
    from services.gateway.security import generate_password, password_problem

    if given is None:
        return generate_password(), True
    problem = password_problem(given)
    if problem:
        raise SystemExit(f"enclave admin: {problem}")
    return given, False


def _run(args: argparse.Namespace) -> int:
    from services.gateway.errors import ApiError
    from services.gateway.security import hash_password

    service = _service()
    action = args.admin_action
    try:
        if action == "groups-list":
            result: Any = service.list_groups()
        elif action == "groups-create":
            result = service.create_group(args.name)
        elif action == "groups-delete":
            result = service.delete_group(args.name)
        elif action == "users-list":
            result = service.list_users()
        elif action in ("users-create", "users-reset-password"):
            password, generated = _password(args.password)
            if action == "users-create":
                result = service.create_user(
                    args.username, hash_password(password), args.role, _groups(args.groups)
                )
            else:
                result = service.set_password(args.username, hash_password(password))
            if generated:
                print(f"password for {args.username}: {password}", file=sys.stderr)
        elif action in ("users-disable", "users-enable"):
            result = service.update_user(args.username, disabled=action == "users-disable")
        elif action == "users-set-role":
            result = service.update_user(args.username, role=args.role)
        elif action == "users-set-groups":
            result = service.update_user(args.username, groups=_groups(args.groups))
        elif action == "users-revoke-sessions":
            result = service.revoke_sessions(args.username)
        elif action == "users-delete":
            result = service.delete_user(args.username)
        else:  # pragma: no cover - argparse only dispatches known actions
            raise SystemExit(f"enclave admin: unknown action {action}")
    except ApiError as exc:
        print(f"enclave admin: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``enclave admin users|groups <action>``."""
    admin = sub.add_parser("admin", help="manage users, roles, groups and sessions (local DB)")
    kinds = admin.add_subparsers(dest="admin_kind", required=True)

    def action(parent: argparse._SubParsersAction, name: str, key: str, help_text: str):
        parser = parent.add_parser(name, help=help_text)
        parser.set_defaults(func=_run, admin_action=key)
        return parser

    groups = kinds.add_parser("groups", help="groups").add_subparsers(dest="op", required=True)
    action(groups, "list", "groups-list", "list groups")
    action(groups, "create", "groups-create", "create a group").add_argument("name")
    action(groups, "delete", "groups-delete", "delete a group").add_argument("name")

    users = kinds.add_parser("users", help="users").add_subparsers(dest="op", required=True)
    action(users, "list", "users-list", "list users with role, groups, disabled")
    create = action(users, "create", "users-create", "create a user")
    create.add_argument("username")
    create.add_argument("--role", default="employee", choices=("admin", "editor", "employee"))
    create.add_argument("--groups", default="", help="comma-separated group names")
    create.add_argument("--password", default=None, help="default: generate and print once")
    for name, key, text in (
        ("disable", "users-disable", "disable a user (their sessions end)"),
        ("enable", "users-enable", "enable a disabled user"),
        ("delete", "users-delete", "delete a user"),
        ("revoke-sessions", "users-revoke-sessions", "end every session of a user"),
    ):
        action(users, name, key, text).add_argument("username")
    reset = action(users, "reset-password", "users-reset-password", "set a new password")
    reset.add_argument("username")
    reset.add_argument("--password", default=None, help="default: generate and print once")
    role = action(users, "set-role", "users-set-role", "change a user's role")
    role.add_argument("username")
    role.add_argument("role", choices=("admin", "editor", "employee"))
    member = action(users, "set-groups", "users-set-groups", "replace a user's groups")
    member.add_argument("username")
    member.add_argument("groups", help="comma-separated group names ('' for none)")
