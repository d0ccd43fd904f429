"""A stand-in OpenAI-compatible endpoint for gateway API tests (the real model runs in e2e).

It answers deterministically from the prompt: the first sentence of source [1] followed
by the marker ``[1]``, so tests can check the gateway's plumbing (SSE framing,
persistence, citation extraction) without a 15 s model load. A test that needs another
answer (one the sources do not support) sets ``FakeLLMServer.replies``: each request
takes the next one from it while it has any (an empty one means the usual answer). Served by a real uvicorn
on a loopback port, so the gateway's HTTP client path is the real one.
"""

from __future__ import annotations

import json
import re
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

_SOURCE_ONE = re.compile(r"\[1\][^\n]*\n(.+?)(?:\n\n\[2\]|\n\nQuestion:)", re.S)


def fake_answer(messages: list[dict]) -> str:
    prompt = messages[-1]["content"]
    match = _SOURCE_ONE.search(prompt)
    if not match:
        return "I don't know based on the available documents."
    first = re.split(r"(?<=[.!?])\s", " ".join(match.group(1).split()), maxsplit=1)[0]
    return f"{first} [1]"


def build_app(requests: list[dict], replies: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "fake", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        requests.append(body)
        answer = (replies.pop(0) if replies else "") or fake_answer(body["messages"])
        if not body.get("stream"):
            return {
                "id": "x",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }

        def events():
            for word in answer.split(" "):
                chunk = {
                    "choices": [
                        {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
                    ]
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class FakeLLMServer:
    def __init__(self, port: int):
        self.port = port
        self.requests: list[dict] = []
        self.replies: list[str] = []
        config = uvicorn.Config(
            build_app(self.requests, self.replies),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
