"""Small helpers shared by the services' integration tests (paths, ports, polling)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


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

