"""Two real llm_server processes (SmolLM2 on our engine) behind one client and one gateway.

One replica is SIGKILLed while requests are in flight on it: every request that had not yet
shown a token is answered by the other; it comes back after a restart once its health check
passes. The gateway, given both URLs in ENCLAVE_LLM_BASE_URLS, answers a chat and reports
both replicas in its readiness and metrics.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llm.client import LLMClient, LLMError
from llm.resilience import CircuitBreaker, RetryPolicy
from tests.integration.faults.stack import Child
from tests.support import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "smollm2-135m-instruct"
ADMIN_PASSWORD = "replicas-admin-pw"


class LLMServer:
    """``python -m services.llm_server`` on a loopback port, in its own process group."""

    def __init__(self, port: int, tmp: Path):
        self.port, self.tmp = port, tmp
        self.url = f"http://127.0.0.1:{port}/v1"
        self.child: Child | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
        env.update(
            PYTHONPATH=str(Path(__file__).resolve().parents[3]),
            ENCLAVE_DATA_DIR=str(self.tmp),
            ENCLAVE_LLM_HOST="127.0.0.1",
            ENCLAVE_LLM_PORT=str(self.port),
            ENCLAVE_LLM_MODEL=MODEL,
            ENCLAVE_LLM_CPU_THREADS="1",  # two servers share the test machine's cores
            ENCLAVE_LLM_KV_CACHE_MB="32",
            ENCLAVE_LLM_MAX_MODEL_LEN="1024",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        argv = ["-m", "services.llm_server"]
        self.child = Child.start(argv, env, self.tmp / f"llm-{self.port}.log")

    def wait_ready(self) -> None:
        assert self.child is not None
        self.child.wait_answers(
            f"{self.url}/models", timeout=180, what=f"llm_server on port {self.port}"
        )

    def kill(self) -> None:
        assert self.child is not None
        self.child.kill()
        self.child.log.close()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from llm.loader.packaged import PackagedModelMissing, smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except PackagedModelMissing as exc:
        pytest.skip(f"SmolLM2 GGUF not installed: {exc}")
    tmp = tmp_path_factory.mktemp("replicas")
    pair = [LLMServer(free_port(), tmp), LLMServer(free_port(), tmp)]
    try:
        for server in pair:  # both load at once
            server.start()
        for server in pair:
            server.wait_ready()
        yield pair
    finally:
        for server in pair:
            server.stop()


def test_the_gateway_asks_both_replicas_and_reports_them(servers, tmp_path, monkeypatch):
    from services.db import make_engine, migrate, session_factory
    from services.gateway.app import create_app
    from services.gateway.auth_service import ensure_admin
    from services.settings import Settings

    for key in [k for k in os.environ if k.startswith("ENCLAVE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ENCLAVE_LLM_BASE_URLS", ",".join(s.url for s in servers))
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        admin_password=ADMIN_PASSWORD,
        llm_model=MODEL,
        answer_tokens=4,
        frontend_dir=tmp_path / "no-frontend",
    )
    assert settings.llm_replica_urls == [s.url for s in servers]
    migrate(settings.resolved_database_url)
    ensure_admin(session_factory(make_engine(settings.resolved_database_url)), ADMIN_PASSWORD)

    class NoQueue:
        def check(self) -> None:
            pass

    app = create_app(settings, job_queue=NoQueue())  # type: ignore[arg-type]
    with TestClient(app) as client:
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        token = client.post("/api/auth/login", json=login).json()["token"]
        client.cookies.clear()
        admin = {"Authorization": f"Bearer {token}"}
        answered = client.post("/api/chat", json={"message": "What is Enclave?"}, headers=admin)
        assert answered.status_code == 200, answered.text
        assert answered.json()["conversation_id"]
        ready = client.get("/readyz", headers=admin).json()
        llm = ready["checks"]["llm"]
        assert llm["ok"] is True
        assert [(r["url"], r["up"]) for r in llm["replicas"]] == [(s.url, True) for s in servers]
        assert sum(r["requests"] for r in llm["replicas"]) >= 1
        metrics = client.get("/metrics", headers=admin).text
        for server in servers:
            assert f'enclave_llm_replica_up{{replica="{server.url}"}} 1.0' in metrics


async def _chat(client: LLMClient, i: int, max_tokens: int) -> str | None:
    """None when answered, else the error."""
    messages = [{"role": "user", "content": f"Say a word about the number {i}."}]
    try:
        await client.chat(messages, max_tokens=max_tokens, conversation_id=f"chat-{i}")
    except LLMError as exc:
        return str(exc)
    return None


async def _stream(client: LLMClient, i: int, max_tokens: int) -> tuple[list[str], str | None]:
    messages = [{"role": "user", "content": f"Count to {i}."}]
    pieces: list[str] = []
    try:
        async for piece in client.stream_chat(
            messages, max_tokens=max_tokens, conversation_id=f"stream-{i}"
        ):
            pieces.append(piece)
    except LLMError as exc:
        return pieces, str(exc)
    return pieces, None


async def _all(requests: Iterable[Awaitable[str | None]]) -> list[str | None]:
    return list(await asyncio.gather(*requests))


async def _kill_during_requests(client: LLMClient, victim: LLMServer) -> list:
    """Eight requests at once; SIGKILL ``victim`` once two of them are in flight on it."""
    replica = client.pool.replicas[1]
    tasks: list[asyncio.Task] = [asyncio.create_task(_chat(client, i, 16)) for i in range(4)]
    tasks += [asyncio.create_task(_stream(client, i, 16)) for i in range(4)]
    for _ in range(3000):  # bounded: 30 s
        if replica.outstanding >= 2 or all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    assert replica.outstanding >= 2, "no request reached the replica before it was killed"
    await asyncio.to_thread(victim.kill)
    return await asyncio.gather(*tasks)


def test_a_killed_replica_loses_no_request_and_comes_back_after_restart(servers):
    live, victim = servers
    client = LLMClient(
        [live.url, victim.url],
        MODEL,
        timeout=120,
        retry=RetryPolicy(attempts=3, base_delay_s=0.05),
        breaker=CircuitBreaker(failure_threshold=5, cooldown_s=30),
        health_interval_s=0.2,
        health_timeout_s=2,
    )
    victim_replica = client.pool.replicas[1]
    try:
        results = asyncio.run(_kill_during_requests(client, victim))
        chats, streams = results[:4], results[4:]
        assert chats == [None] * 4, chats  # a non-streamed answer is never lost
        for pieces, error in streams:  # a stream fails only once it has shown text
            assert error is None or (pieces and "mid-stream" in error), (pieces, error)
        assert not victim_replica.up

        victim.start()  # loads its model while the live replica takes everything
        during = asyncio.run(_all(_chat(client, 10 + i, 2) for i in range(4)))
        assert during == [None] * 4, during
        victim.wait_ready()
        wait_for(lambda: victim_replica.up, timeout=30, what="the health check to see it back")

        before = victim_replica.requests
        after = asyncio.run(_all(_chat(client, 20 + i, 2) for i in range(6)))
        assert after == [None] * 6, after
        assert victim_replica.requests > before, "no traffic went back to the restarted replica"
    finally:
        client.close()
