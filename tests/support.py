"""Helpers every test package shares: the corpus, free ports, polling, required services.

One copy, so a fix reaches every test. ``require_service`` is the rule for tests that need
PostgreSQL, Redis or another real service: on a developer's machine without it the test is
skipped with the reason; under CI (``ENCLAVE_REQUIRE_SERVICES=1``, set by ``.ci/run``) a
missing service fails the run, so a green CI cannot hide a service that quietly was not there.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def corpus_dir() -> Path:
    """The shared corpus: ``$ENCLAVE_CORPUS_DIR``, else ``<repo>/../shared/corpus``.

    Nothing else: a test must not pick up whatever corpus one machine happens to have.
    """
    env = os.environ.get("ENCLAVE_CORPUS_DIR")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "corpus").resolve()


def require_corpus() -> Path:
    """The corpus folder, or skip/fail (as ``require_service``) when it is not there."""
    root = corpus_dir()
    if not ((root / "docs").is_dir() and (root / "questions.jsonl").is_file()):
        missing(f"the evaluation corpus is not at {root} (set ENCLAVE_CORPUS_DIR)")
    return root


def services_required() -> bool:
    """Whether a missing service is a failure (CI) rather than a skip (a laptop)."""
    return os.environ.get("ENCLAVE_REQUIRE_SERVICES", "") not in ("", "0", "false")


def missing(reason: str) -> None:
    """Fail under CI, skip elsewhere; never returns."""
    if services_required():
        pytest.fail(f"required by CI but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (laptop) or fail (CI) unless ``host:port`` accepts connections."""
    if not port_open(host, port):
        missing(f"{name} is not reachable at {host}:{port}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 60.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout``.

    No timing assertion: the deadline only bounds a hang.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class LoopbackServer:
    """An ASGI app served by uvicorn on a thread at 127.0.0.1 (stand-in and in-process servers).

    Real HTTP, so the client path under test is the real one. ``port`` None binds a free port
    and keeps the socket (no race with another test picking the same number); ``lifespan``
    "on" runs the app's start-up (a model load) before ``with`` returns. ``with`` waits until
    it listens, fails if the server thread dies first, and stops it on exit.
    """

    def __init__(
        self,
        app: object,
        port: int | None = None,
        *,
        lifespan: str = "off",
        start_timeout: float = 20,
    ):
        import socket
        import threading

        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port or 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._start_timeout = start_timeout
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self):  # noqa: ANN204 - returns the subclass instance
        self.thread.start()

        def listening() -> bool:
            if not self.thread.is_alive():
                raise RuntimeError(f"the loopback server on port {self.port} did not start")
            return bool(self.server.started)

        wait_for(listening, timeout=self._start_timeout, what="the loopback server")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self._sock.close()


PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def throwaway_postgres_database(prefix: str = "enclave_test") -> Iterator[str]:
    """A fresh database ``<prefix>_<random>`` on the local PostgreSQL, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
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
