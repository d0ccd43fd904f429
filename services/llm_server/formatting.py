"""OpenAI response shapes: chat and text completions, whole or as stream chunks, usage, logprobs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .backends.base import TokenLogprob
from .prepare import PreparedRequest


@dataclass
class ChoiceResult:
    """What one choice produced so far (non-stream responses and usage)."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {**_entry(e.token, e.logprob), "top_logprobs": [_entry(t, lp) for t, lp in e.top]}
            for e in entries
        ]
    }


def completion_logprobs(entries: list[TokenLogprob], text_start: int = 0) -> dict[str, Any]:
    offsets, offset = [], text_start
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [dict(e.top) for e in entries],
        "text_offset": offsets,
    }


def _head(req: PreparedRequest, obj: str) -> dict[str, Any]:
    return {"id": req.request_id, "object": obj, "created": req.created, "model": req.model}


def full_response(
    req: PreparedRequest, choices: dict[int, ChoiceResult], prompt_tokens: int
) -> dict[str, Any]:
    """The non-streamed body."""
    out = []
    for index in sorted(choices):
        c = choices[index]
        wants_logprobs = req.jobs[index].params.logprobs
        if req.kind == "chat":
            out.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": chat_logprobs(c.logprobs) if wants_logprobs else None,
                    "finish_reason": c.finish_reason,
                }
            )
        else:
            out.append(
                {
                    "index": index,
                    "text": c.text,
                    "logprobs": completion_logprobs(c.logprobs) if wants_logprobs else None,
                    "finish_reason": c.finish_reason,
                }
            )
    completion_tokens = sum(c.completion_tokens for c in choices.values())
    obj = "chat.completion" if req.kind == "chat" else "text_completion"
    return {**_head(req, obj), "choices": out, "usage": usage(prompt_tokens, completion_tokens)}


def chunk(
    req: PreparedRequest,
    index: int,
    *,
    text: str | None = None,
    role: bool = False,
    logprobs: list[TokenLogprob] | None = None,
    finish_reason: str | None = None,
    text_offset: int = 0,
) -> dict[str, Any]:
    """One stream chunk carrying one choice's piece."""
    if req.kind == "chat":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice = {
            "index": index,
            "delta": delta,
            "logprobs": chat_logprobs(logprobs) if logprobs else None,
            "finish_reason": finish_reason,
        }
        body = {**_head(req, "chat.completion.chunk"), "choices": [choice]}
    else:
        choice = {
            "index": index,
            "text": text or "",
            "logprobs": completion_logprobs(logprobs, text_offset) if logprobs else None,
            "finish_reason": finish_reason,
        }
        body = {**_head(req, "text_completion"), "choices": [choice]}
    if req.include_usage:
        body["usage"] = None
    return body


def usage_chunk(req: PreparedRequest, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    return {**_head(req, obj), "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
