"""Helpers for the LLM server tests: a uvicorn server in a thread, settings, polling, metric reads."""

from __future__ import annotations

import httpx

from tests.support import LoopbackServer, free_port, wait_for  # noqa: F401 (the server tests import them from here)

MAX_MODEL_LEN = 1024


class LiveServer(LoopbackServer):
    """The LLM server's app on a free loopback port, its lifespan (model load) run first."""

    def __init__(self, app):
        super().__init__(app, lifespan="on", start_timeout=60)


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
