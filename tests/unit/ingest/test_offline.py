"""Parsing every format makes no network attempt: no telemetry ping, no spaCy/NLTK download.

Runs in a fresh interpreter so that unstructured's import-time telemetry and the first
spaCy model load happen under the guard. The guard records (and refuses) every DNS
lookup and every socket connect to a non-loopback address. The control case shows the
guard does catch unstructured's own download attempt when ensure_offline() is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]

GUARD = textwrap.dedent(
    """
    import ipaddress, json, socket, sys
    attempts = []

    def _loopback(host):
        if host in (None, "localhost", ""):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(host):
            attempts.append(["connect", str(address)])
            raise OSError("egress blocked by test")
        return real_connect(self, address)

    def connect_ex(self, address):
        try:
            connect(self, address)
            return 0
        except OSError:
            return 111

    def getaddrinfo(host, *args, **kwargs):
        if not _loopback(host if isinstance(host, str) else None):
            attempts.append(["getaddrinfo", str(host)])
            raise socket.gaierror("egress blocked by test")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    """
)


def _run(body: str, files: dict[str, str]) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DO_NOT_TRACK",
            "SCARF_NO_ANALYTICS",
            "UNSTRUCTURED_DISABLE_NOTICE",
            "HF_HUB_OFFLINE",
        )
    }
    script = (
        GUARD
        + f"\nFILES = {json.dumps(files)}\n"
        + textwrap.dedent(body)
        + "\nprint('RESULT ' + json.dumps({'attempts': attempts, 'out': out}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"subprocess failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.slow
def test_parsing_all_formats_makes_no_connection_attempt(docs):
    files = {k: str(docs[k]) for k in ("md", "docx", "html", "txt", "pdf")}
    result = _run(
        """
        from pathlib import Path
        from ingest.offline import ensure_offline
        from ingest.parse import parse_document
        ensure_offline()
        out = {}
        for kind, path in FILES.items():
            out[kind] = len(parse_document(Path(path)).elements)
        import socket
        try:  # the guard itself works
            socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("192.0.2.1", 80))
        except OSError:
            pass
        """,
        files,
    )
    assert all(n > 0 for n in result["out"].values()), result
    # exactly the one deliberate probe was seen: parsing attempted nothing
    assert result["attempts"] == [["connect", "('192.0.2.1', 80)"]], result["attempts"]


@pytest.mark.slow
def test_guard_catches_unstructured_download_without_ensure_offline(docs):
    result = _run(
        """
        from unstructured.partition.md import partition_md
        out = {}
        try:
            partition_md(filename=FILES["md"])
            out["error"] = None
        except Exception as exc:
            out["error"] = repr(exc)
        """,
        {"md": str(docs["md"])},
    )
    hosts = {a[1] for a in result["attempts"]}
    assert {"packages.unstructured.io", "github.com"} <= hosts, (
        result
    )  # telemetry ping and model download
