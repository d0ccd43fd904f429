"""Keep a process on the loopback: offline/telemetry-off environment and a connect guard.

``harden_process`` is the first thing every Enclave process runs. It sets the variables
(``ingest.offline.OFFLINE_ENV``, the one list) that keep Hugging Face, Chroma, unstructured and friends offline and silent, and, when
``settings.egress_guard`` is on, installs an audit hook (``sys.addaudithook``) that
refuses any ``socket.connect`` or UDP ``sendto`` to a non-loopback address and any name
lookup (``getaddrinfo``, ``gethostbyname[_ex]``, ``gethostbyaddr``) of a non-local host, appending each attempt to ``settings.egress_log``. Audit hooks cannot
be removed, so the guard holds for the life of the process, C extensions' Python-level
sockets included.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.offline import OFFLINE_ENV

if TYPE_CHECKING:
    from services.settings import Settings


_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}


class EgressBlocked(PermissionError):
    """A connection to a non-loopback destination was refused by the egress guard."""


def set_offline_env() -> None:
    """Turn off downloads and telemetry for this process and its children."""
    os.environ.update(OFFLINE_ENV)


def is_loopback_host(host: Any) -> bool:
    """True for loopback IPs and names that mean this machine."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]").split("%", 1)[0].lower()
    if host in _LOCAL_NAMES or host == socket.gethostname().lower():
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.is_loopback or address.is_unspecified:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(mapped and mapped.is_loopback)


class EgressGuard:
    """The audit hook: decides per event, records refusals, raises ``EgressBlocked``."""

    def __init__(self, log_path: Path | None, process_name: str):
        self.log_path = log_path
        self.process_name = process_name
        self._local = threading.local()

    def __call__(self, event: str, args: tuple) -> None:
        if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            # connect(sock, address); sendto(sock, address) for UDP datagrams
            destination = args[1] if len(args) > 1 else None
            if not isinstance(destination, tuple) or not destination:
                return  # AF_UNIX paths, sendmsg without an address, non-IP families
            host, port = destination[0], destination[1] if len(destination) > 1 else None
        elif event == "socket.getaddrinfo":
            host, port = args[0], args[1] if len(args) > 1 else None
        elif event in ("socket.gethostbyname", "socket.gethostbyaddr"):
            # gethostbyname and gethostbyname_ex both raise "socket.gethostbyname"
            host, port = args[0] if args else None, None
        else:
            return
        if is_loopback_host(host):
            return
        if getattr(self._local, "busy", False):
            raise EgressBlocked(f"egress blocked: {host}:{port}")
        self._local.busy = True
        try:
            self._record(event, host, port)
        finally:
            self._local.busy = False
        raise EgressBlocked(f"egress blocked by Enclave's egress guard: {event} to {host}:{port}")

    def _record(self, event: str, host: Any, port: Any) -> None:
        if self.log_path is None:
            return
        entry = {
            "time": time.time(),
            "pid": os.getpid(),
            "process": self.process_name,
            "event": event,
            "host": str(host),
            "port": port,
            "stack": traceback.format_stack(limit=8)[:-2],
        }
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, default=str) + "\n")
        except OSError:
            pass


_INSTALLED_FLAG = "_enclave_egress_guard_installed"


def install_egress_guard(log_path: Path | None, process_name: str) -> EgressGuard | None:
    """Install the guard once per process; later calls are no-ops."""
    if getattr(sys, _INSTALLED_FLAG, False):
        return None
    guard = EgressGuard(Path(log_path) if log_path else None, process_name)
    sys.addaudithook(guard)
    setattr(sys, _INSTALLED_FLAG, True)
    return guard


def harden_process(settings: Settings, process_name: str) -> None:
    """Start-up step of every process: offline env always, the guard when configured."""
    set_offline_env()
    if settings.egress_guard:
        install_egress_guard(settings.egress_log, process_name)
