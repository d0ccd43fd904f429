"""Helpers for the LLM server tests: a uvicorn server in a thread, settings, polling, metric reads."""

from __future__ import annotations

import socket
import threading
import time

import httpx

from tests.support import free_port, wait_for  # noqa: F401 (the server tests import them from here)

MAX_MODEL_LEN = 1024


class LiveServer:
    """An ASGI app served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def settings(**overrides):
    from services.settings import Settings

    return Settings(_env_file=None, **overrides)


def metric_value(base_url: str, name: str, labels: str = "") -> float:
    """The value of one sample in the server's /metrics (0 when absent)."""
    text = httpx.get(f"{base_url}/metrics").text
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0
