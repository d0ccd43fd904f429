"""llm.client over several replicas on loopback: fail-over before the first token, never after,
and the background health check taking a replica out and putting it back."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from llm.client import LLMClient, LLMError
from llm.resilience import CircuitBreaker, RetryPolicy
from tests.support import LoopbackServer, free_port, wait_for


class Replica(LoopbackServer):
    """A fake OpenAI server that names itself in its answers; ``state`` switches its health."""

    def __init__(self, name: str):
        self.name = name
        self.state = {"models": 200, "chat": 200, "chats": 0}
        super().__init__(self._app(), free_port())
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models():
            if self.state["models"] != 200:
                return JSONResponse({"status": "starting"}, status_code=self.state["models"])
            return {"object": "list", "data": [{"id": "m", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(body: dict):
            self.state["chats"] += 1
            if self.state["chat"] != 200:
                return JSONResponse({"error": {"message": "busy"}}, status_code=self.state["chat"])
            if not body.get("stream"):
                message = {"role": "assistant", "content": self.name}
                return {"choices": [{"message": message, "finish_reason": "stop"}]}
            drop = body["messages"][-1]["content"] == "drop"

            def events():
                yield f"data: {json.dumps({'choices': [{'delta': {'content': self.name}}]})}\n\n"
                if drop:  # the server dies after the first token: the connection breaks
                    raise RuntimeError("replica died mid-answer")
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        return app


@pytest.fixture
def replicas():
    with Replica("A") as a, Replica("B") as b:
        yield a, b


def client_of(*urls: str, **kwargs) -> LLMClient:
    return LLMClient(
        list(urls),
        "m",
        timeout=10,
        retry=RetryPolicy(attempts=2, base_delay_s=0.01),
        breaker=CircuitBreaker(failure_threshold=3, cooldown_s=30),
        **kwargs,
    )


def ask(client: LLMClient, content: str = "q", conversation_id: str | None = None) -> str:
    messages = [{"role": "user", "content": content}]
    return asyncio.run(client.chat(messages, conversation_id=conversation_id)).text


def stream(client: LLMClient, content: str = "q", conversation_id: str | None = None) -> list[str]:
    messages = [{"role": "user", "content": content}]

    async def drain() -> list[str]:
        return [p async for p in client.stream_chat(messages, conversation_id=conversation_id)]

    return asyncio.run(drain())


def test_a_refused_replica_is_skipped_at_once_and_no_request_fails(replicas):
    a, _ = replicas
    dead = f"http://127.0.0.1:{free_port()}/v1"
    client = client_of(dead, a.url)
    answers = [ask(client, conversation_id=f"c{i}") for i in range(4)]
    answers += ["".join(stream(client, conversation_id=f"s{i}")) for i in range(4)]
    assert answers == ["A"] * 8
    down = client.pool.replicas[0]
    assert not down.up and "unreachable" in (down.error or "")
    assert down.requests == 1  # only the request that found it dead went there
    assert client.breaker.failures == 0  # the service as a whole never failed
    client.close()


def test_a_replica_answering_503_is_failed_over(replicas):
    a, b = replicas
    b.state["chat"] = 503
    client = client_of(a.url, b.url)
    assert [ask(client, conversation_id=f"c{i}") for i in range(4)] == ["A"] * 4
    assert b.state["chats"] == 1 and not client.pool.replicas[1].up
    client.close()


def test_a_stream_that_broke_after_its_first_token_is_not_restarted_elsewhere(replicas):
    a, b = replicas
    client = client_of(a.url, b.url)
    client.pool.mark_down(client.pool.replicas[1], "kept out for this test")
    pieces: list[str] = []

    async def drain() -> None:
        async for piece in client.stream_chat([{"role": "user", "content": "drop"}]):
            pieces.append(piece)

    with pytest.raises(LLMError, match="mid-stream"):
        asyncio.run(drain())
    assert pieces == ["A"]  # shown once, never followed by a second answer from B
    assert b.state["chats"] == 0
    client.close()


def test_all_replicas_down_is_the_single_server_error(replicas):
    client = client_of(f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(LLMError, match="unreachable"):
        ask(client)
    assert client.breaker.failures == 2  # one per attempt, as with one server
    assert asyncio.run(client.health()) is False
    client.close()


def test_the_health_check_takes_a_replica_out_and_puts_it_back(replicas):
    a, b = replicas
    client = client_of(a.url, b.url, health_interval_s=0.1, health_timeout_s=2)
    replica_a = client.pool.replicas[0]
    ask(client)  # the first request starts the checks
    a.state["models"] = 503  # e.g. restarting: its model is not loaded yet
    wait_for(lambda: not replica_a.up, timeout=20, what="A marked down by its health check")
    assert replica_a.error == "health check answered 503"
    before = a.state["chats"]
    assert [ask(client, conversation_id=f"c{i}") for i in range(4)] == ["B"] * 4
    assert a.state["chats"] == before
    a.state["models"] = 200
    wait_for(lambda: replica_a.up, timeout=20, what="A back after its health check passed")
    assert "A" in {ask(client, conversation_id=f"d{i}") for i in range(4)}
    client.close()
