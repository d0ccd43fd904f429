"""The egress guard refuses and records non-loopback connections, and lets loopback through."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from services.egress_guard import is_loopback_host


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.1", "::1", "localhost", "0.0.0.0", "::ffff:127.0.0.1", None]
)
def test_loopback_hosts(host):
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host", ["10.255.255.1", "8.8.8.8", "huggingface.co", "2001:db8::1", "192.168.1.1"]
)
def test_non_loopback_hosts(host):
    assert not is_loopback_host(host)


def _run_guarded(tmp_path, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter that started like an Enclave process, guard on."""
    log = tmp_path / "egress.log"
    code = textwrap.dedent(f"""
        from services.settings import Settings
        from services.egress_guard import harden_process
        harden_process(Settings(egress_guard=True, egress_log={str(log)!r}), "probe")
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_guard_blocks_and_records_a_non_loopback_connect(tmp_path):
    result = _run_guarded(
        tmp_path,
        """
        import socket
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("10.255.255.1", 80))
        except PermissionError as exc:
            print("BLOCKED", exc)
        else:
            print("CONNECTED")
    """,
    )
    assert "BLOCKED" in result.stdout, result.stderr
    entries = [json.loads(line) for line in (tmp_path / "egress.log").read_text().splitlines()]
    assert len(entries) == 1
    assert entries[0]["host"] == "10.255.255.1" and entries[0]["port"] == 80
    assert entries[0]["event"] == "socket.connect" and entries[0]["process"] == "probe"


def test_guard_blocks_name_lookups_of_remote_hosts(tmp_path):
    result = _run_guarded(
        tmp_path,
        """
        import socket
        try:
            socket.getaddrinfo("huggingface.co", 443)
        except PermissionError:
            print("BLOCKED")
    """,
    )
    assert "BLOCKED" in result.stdout, result.stderr
    assert "huggingface.co" in (tmp_path / "egress.log").read_text()


def test_guard_lets_loopback_through_and_sets_offline_env(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept()[0].close(), daemon=True).start()
    result = _run_guarded(
        tmp_path,
        f"""
        import os, socket
        socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
        print("CONNECTED", os.environ["HF_HUB_OFFLINE"], os.environ["ANONYMIZED_TELEMETRY"])
    """,
    )
    server.close()
    assert "CONNECTED 1 False" in result.stdout, result.stderr
    assert not (tmp_path / "egress.log").exists()
