"""Migration 0002 on SQLite and PostgreSQL: the audit trail refuses UPDATE/DELETE, models match."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from services.db import AuditEntry, Base, alembic_config, make_engine, migrate, session_factory

pytestmark = [pytest.mark.integration]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'enclave.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    name = f"m2_{uuid.uuid4().hex[:8]}"
    admin = make_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_audit_rows_can_be_added_but_never_changed_or_removed(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.add(AuditEntry(username="u", action="chat", query="q", chunk_ids=["c"], answer="a"))
    for statement in ("UPDATE audit SET answer = 'x'", "DELETE FROM audit"):
        with pytest.raises(sqlalchemy.exc.DatabaseError), sessions.begin() as session:
            session.execute(text(statement))
    with sessions() as session:
        assert session.execute(text("SELECT answer FROM audit")).scalars().all() == ["a"]
    engine.dispose()


def test_models_match_the_migrated_schema(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrate(database_url)
    engine = make_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_0002_downgrades_and_upgrades_again(database_url):
    from alembic import command

    migrate(database_url)
    command.downgrade(alembic_config(database_url), "0001")
    migrate(database_url)
