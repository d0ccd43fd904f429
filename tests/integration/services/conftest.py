"""Fixtures for the services' integration tests: throwaway PostgreSQL DBs, Redis presence."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import require_service, throwaway_postgres_database

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database ``enclave_test_<random>`` on the local PostgreSQL, dropped afterwards."""
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_available() -> None:
    require_service("Redis", REDIS_HOST, REDIS_PORT)
