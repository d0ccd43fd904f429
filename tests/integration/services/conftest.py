"""Fixtures for the services' integration tests: throwaway PostgreSQL DBs, Redis presence."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from tests.support import missing, require_service

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@contextlib.contextmanager
def throwaway_postgres_database() -> Iterator[str]:
    """A fresh database ``enclave_test_<random>`` on the local PostgreSQL, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    from sqlalchemy import create_engine, text

    name = f"enclave_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        missing(f"cannot create a PostgreSQL test database: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One throwaway database for the whole session (tests that share a migrated schema)."""
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A throwaway database of this test alone, still empty (no schema)."""
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_available() -> None:
    require_service("Redis", REDIS_HOST, REDIS_PORT)
