"""Fixtures for the services' integration tests: throwaway PostgreSQL DBs, Redis presence."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import require_service, throwaway_postgres_database

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


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
