"""The egress guard also covers UDP datagrams and the old name-lookup calls (issue 12)."""

from __future__ import annotations

import json

import pytest

from tests.unit.services.test_egress_guard import _run_guarded


@pytest.mark.parametrize(
    "call",
    [
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('10.255.255.1', 53))",
        "socket.gethostbyname('example.com')",
        "socket.gethostbyname_ex('example.com')",
        "socket.gethostbyaddr('8.8.8.8')",
    ],
)
def test_udp_sendto_and_name_lookups_to_the_outside_are_refused(tmp_path, call):
    result = _run_guarded(
        tmp_path,
        f"""
        import socket
        try:
            {call}
        except PermissionError as exc:
            print("BLOCKED", exc)
        except OSError as exc:
            print("ATTEMPTED", exc)
        else:
            print("SENT")
        """,
    )
    assert "BLOCKED" in result.stdout, result.stdout + result.stderr
    entries = [json.loads(line) for line in (tmp_path / "egress.log").read_text().splitlines()]
    assert len(entries) == 1 and entries[0]["host"] in ("10.255.255.1", "example.com", "8.8.8.8")


def test_udp_to_loopback_still_works(tmp_path):
    result = _run_guarded(
        tmp_path,
        """
        import socket
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.sendto(b"ping", receiver.getsockname())
        receiver.settimeout(5)
        print("GOT", receiver.recv(16).decode(), socket.gethostbyname("localhost"))
        """,
    )
    assert "GOT ping 127.0.0.1" in result.stdout, result.stdout + result.stderr
