"""Internal HTTP clients ignore HTTP(S)_PROXY: prompts (with document text) never go to a proxy."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from llm.client import LLMClient
from tests.integration.services.fake_llm import FakeLLMServer
from tests.support import free_port


class RecordingProxy:
    """A TCP listener standing in for a corporate proxy: records what reaches it, answers 502."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.received.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy(monkeypatch):
    recorder = RecordingProxy()
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.setenv(name, recorder.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield recorder
    recorder.close()


def test_llm_client_talks_to_the_server_directly_despite_a_proxy_in_the_environment(proxy):
    with FakeLLMServer(free_port()) as llm:
        client = LLMClient(llm.base_url, "fake", timeout=10)
        secret = "PROXY-MUST-NOT-SEE-THIS salary table"

        async def exchange() -> tuple[str, list[str], bool]:
            whole = await client.chat([{"role": "user", "content": secret}], max_tokens=8)
            streamed = [p async for p in client.stream_chat([{"role": "user", "content": secret}])]
            return whole.text, streamed, await client.health()

        text, pieces, healthy = asyncio.run(exchange())
    assert text and pieces and healthy
    assert proxy.received == []
    assert len(llm.requests) == 2
