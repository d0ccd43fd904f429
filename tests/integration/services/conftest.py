"""Fixtures for the services' integration tests: throwaway PostgreSQL DBs, Redis DB numbers."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database ``enclave_test_<random>`` on the local PostgreSQL, dropped afterwards."""
    if not port_open("127.0.0.1", 5432):
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    from sqlalchemy import create_engine, text

    name = f"enclave_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        pytest.skip(f"cannot create a PostgreSQL test database: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_available() -> None:
    if not port_open(REDIS_HOST, REDIS_PORT):
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")


def corpus_dir() -> Path:
    """The shared corpus: $ENCLAVE_CORPUS_DIR, else <repo>/../shared/corpus, else /work/shared/corpus."""
    if os.environ.get("ENCLAVE_CORPUS_DIR"):
        return Path(os.environ["ENCLAVE_CORPUS_DIR"])
    beside = Path(__file__).resolve().parents[3] / ".." / "shared" / "corpus"
    return beside if beside.is_dir() else Path("/work/shared/corpus")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
