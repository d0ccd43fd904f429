"""The LLM server killed during a streamed answer: the client gets an SSE ``error`` event,
the gateway stays up, and the next request works once the server is back."""

from __future__ import annotations

import json

import httpx
import pytest

from services.settings import Settings
from tests.integration.faults.stack import (
    ADMIN_PASSWORD,
    admin_headers,
    prepare_database,
    start_fake_llm,
    start_gateway,
)
from tests.support import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _events(response: httpx.Response, on_first_token) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:") and name:
            events.append((name, json.loads(line[5:])))
            if name == "token" and sum(e == "token" for e, _ in events) == 1:
                on_first_token()
    return events


def test_llm_killed_mid_stream_gives_an_error_event_and_recovers(tmp_path):
    llm_port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        admin_password=ADMIN_PASSWORD,
        llm_base_url=f"http://127.0.0.1:{llm_port}/v1",
        llm_retry_attempts=2,
        llm_breaker_failures=2,
        llm_breaker_cooldown_s=1.0,
    )
    prepare_database(settings)
    llm = start_fake_llm(llm_port, tmp_path / "llm.log", token_delay_s=0.5)
    gateway = start_gateway(settings, tmp_path / "gateway.log")
    base = f"http://127.0.0.1:{settings.port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            headers = admin_headers(http)
            question = {"message": "How do I carry over leave?", "stream": True}
            with http.stream("POST", "/api/chat", json=question, headers=headers) as response:
                assert response.status_code == 200
                events = _events(response, on_first_token=llm.kill)
            names = [name for name, _ in events]
            assert names[0] == "token" and names[-1] == "error", names
            assert "done" not in names
            assert "language model" in events[-1][1]["message"]

            assert http.get("/healthz").status_code == 200  # the gateway stayed up
            down = http.post("/api/chat", json={"message": "Still there?"}, headers=headers)
            assert down.status_code == 502, down.text
            assert down.json()["error"]["code"] == "upstream_unavailable"
            assert http.get("/readyz", headers=headers).json()["checks"]["llm"]["ok"] is False

            llm = start_fake_llm(llm_port, tmp_path / "llm.log")

            def answered() -> dict | None:
                reply = http.post("/api/chat", json={"message": "Back?"}, headers=headers)
                return reply.json() if reply.status_code == 200 else None

            body = wait_for(answered, timeout=60, interval=0.5, what="a chat answer after restart")
            assert body["answer"]
            assert gateway.process.poll() is None
    finally:
        llm.stop()
        gateway.stop()
