"""The gateway's prompt budget follows the LLM server's reported max_model_len.

Served by a real HTTP server on loopback whose /v1/models answer the test changes, so
the client's HTTP path is the real one.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llm.client import LLMClient
from services.gateway.context_window import ContextWindow
from tests.support import free_port

FALLBACK = 2048


class ModelsServer:
    """Answers GET /v1/models with ``self.models`` (or ``self.status`` when not 200)."""

    def __init__(self, port: int):
        self.models: list[dict] = []
        self.status = 200
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.requests += 1
                body = json.dumps({"object": "list", "data": owner.models}).encode()
                self.send_response(owner.status if self.path == "/v1/models" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def server(port) -> Iterator[ModelsServer]:
    running = ModelsServer(port)
    try:
        yield running
    finally:
        running.close()


def window(port: int, model: str = "gpt-oss-20b", refresh_s: float = 0.0) -> ContextWindow:
    client = LLMClient(f"http://127.0.0.1:{port}/v1", model)
    return ContextWindow(client, FALLBACK, refresh_s=refresh_s)


def tokens(context: ContextWindow) -> int:
    return asyncio.run(context.tokens())


def test_budget_is_the_servers_max_model_len(server, port):
    server.models = [{"id": "gpt-oss-20b", "object": "model", "max_model_len": 16384}]
    context = window(port)
    assert tokens(context) == 16384
    assert context.source == "llm_server"


def test_the_configured_model_is_the_one_read(server, port):
    server.models = [
        {"id": "other", "max_model_len": 4096},
        {"id": "gpt-oss-20b", "max_model_len": 32768},
    ]
    assert tokens(window(port)) == 32768
    assert tokens(window(port, model="missing")) == FALLBACK  # two models, none is ours


def test_a_server_that_does_not_say_leaves_the_setting(server, port):
    server.models = [{"id": "gpt-oss-20b", "object": "model"}]  # e.g. Ollama
    context = window(port)
    assert tokens(context) == FALLBACK
    assert context.source == "setting"


def test_unreachable_then_up_then_restarted_with_another_length(port):
    context = window(port)
    assert tokens(context) == FALLBACK  # nothing listens yet
    server = ModelsServer(port)
    try:
        server.models = [{"id": "gpt-oss-20b", "max_model_len": 8192}]
        assert tokens(context) == 8192
        server.models = [{"id": "gpt-oss-20b", "max_model_len": 131072}]
        assert tokens(context) == 131072
        server.status = 503  # a failed check keeps the last figure learned
        assert tokens(context) == 131072
    finally:
        server.close()
    assert tokens(context) == 131072


def test_checks_are_rate_limited(server, port):
    server.models = [{"id": "gpt-oss-20b", "max_model_len": 8192}]
    now = [0.0]
    client = LLMClient(f"http://127.0.0.1:{port}/v1", "gpt-oss-20b")
    context = ContextWindow(client, FALLBACK, refresh_s=60.0, clock=lambda: now[0])
    for _ in range(5):
        assert tokens(context) == 8192
    assert server.requests == 1
    server.models = [{"id": "gpt-oss-20b", "max_model_len": 4096}]
    now[0] = 61.0
    assert tokens(context) == 4096
    assert server.requests == 2
