"""llm.client against a real HTTP server on loopback: streaming, errors mid-stream, unreachable servers."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from llm.client import LLMClient, LLMError
from tests.support import free_port


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "m", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        mode = body["messages"][-1]["content"]
        if mode == "reject":
            return JSONResponse(
                {"error": {"message": "max_tokens too large", "type": "invalid_request_error"}},
                status_code=400,
            )
        if not body.get("stream"):
            return {
                "choices": [
                    {
                        "message": {"role": "assistant", "content": "Hello [1]"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3},
            }

        def events():
            yield sse({"choices": [{"delta": {"role": "assistant"}}]})
            yield sse({"choices": [{"delta": {"content": "Hel"}}]})
            yield sse({"choices": [{"delta": {"content": "lo"}}]})
            if mode == "fail":
                yield sse({"error": {"message": "engine died", "type": "server_error"}})
                return
            yield sse({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}})
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def base_url():
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


async def collect(client: LLMClient, text: str) -> str:
    return "".join(
        [piece async for piece in client.stream_chat([{"role": "user", "content": text}])]
    )


def test_chat_returns_text_and_usage(base_url):
    result = asyncio.run(LLMClient(base_url, "m").chat([{"role": "user", "content": "hi"}]))
    assert (result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens) == (
        "Hello [1]",
        "stop",
        7,
        3,
    )


def test_stream_joins_deltas_and_skips_usage_chunks(base_url):
    assert asyncio.run(collect(LLMClient(base_url, "m"), "hi")) == "Hello"


def test_error_event_mid_stream_raises_llm_error(base_url):
    with pytest.raises(LLMError, match="engine died"):
        asyncio.run(collect(LLMClient(base_url, "m"), "fail"))


def test_http_error_carries_the_servers_message(base_url):
    with pytest.raises(LLMError, match="400.*max_tokens too large"):
        asyncio.run(LLMClient(base_url, "m").chat([{"role": "user", "content": "reject"}]))


def test_unreachable_server_is_a_clear_error():
    client = LLMClient(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=2)
    with pytest.raises(LLMError, match="unreachable"):
        asyncio.run(client.chat([{"role": "user", "content": "hi"}]))
    assert asyncio.run(client.health()) is False


def test_health_true_when_models_listed(base_url):
    assert asyncio.run(LLMClient(base_url, "m").health()) is True
