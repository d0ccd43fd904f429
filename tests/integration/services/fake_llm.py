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
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from tests.support import LoopbackServer

_SOURCE_ONE = re.compile(r"\[1\][^\n]*\n(.+?)(?:\n</source>|\n\n\[2\]|\n\nQuestion:)", re.S)


def fake_answer(messages: list[dict]) -> str:
    prompt = messages[-1]["content"]
    match = _SOURCE_ONE.search(prompt)
    if not match:
        return "I don't know based on the available documents."
    first = re.split(r"(?<=[.!?])\s", " ".join(match.group(1).split()), maxsplit=1)[0]
    return f"{first} [1]"


_DURATION_ASKED = re.compile(r"\b(\d+ (?:month|year|day|week)s?)\b")


def fake_plan(body: dict) -> str | None:
    """For a drafting request (``response_format`` named ``draft_plan``): add the first library
    clause the schema offers, with its first parameter set to the duration the instructions
    name; None for any other request. Deterministic, so tests see exactly what was offered.
    """
    response_format = body.get("response_format") or {}
    spec = response_format.get("json_schema") or {}
    if spec.get("name") != "draft_plan":
        return None
    schema = spec["schema"]["properties"]
    offered = schema["add"].get("items", {}).get("properties", {}).get("clause_id", {})
    asked = _DURATION_ASKED.search(body["messages"][-1]["content"].split("Instructions:")[-1])
    add = []
    if schema["add"].get("maxItems") and offered.get("enum"):
        edits = [{"parameter": 0, "value": asked.group(1)}] if asked else []
        add.append({"clause_id": offered["enum"][0], "edits": edits})
    return json.dumps({"include": [], "edits": [], "add": add})


def build_app(
    requests: list[dict], replies: list[str] | None = None, token_delay_s: float = 0.0
) -> FastAPI:
    """The fake endpoint: ``replies`` are answered first, in order (scripted tests);
    ``token_delay_s`` paces a stream (to kill the server mid-answer)."""
    replies = replies if replies is not None else []
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "fake", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        requests.append(body)
        answer = (
            fake_plan(body) or (replies.pop(0) if replies else "") or fake_answer(body["messages"])
        )
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
                time.sleep(token_delay_s)
                chunk = {
                    "choices": [
                        {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
                    ]
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class FakeLLMServer(LoopbackServer):
    def __init__(self, port: int):
        self.requests: list[dict] = []
        self.replies: list[str] = []
        super().__init__(build_app(self.requests, self.replies), port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def main() -> None:
    """Serve the fake as its own process: ``python -m tests.integration.services.fake_llm``."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-delay", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(
        build_app([], token_delay_s=args.token_delay),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
