"""Thin HTTP routes of the LLM server: parse, hand to prepare + service, return."""

from __future__ import annotations

import time
from dataclasses import replace

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .errors import ModelNotFound
from .metrics import CONTENT_TYPE
from .prepare import PreparedRequest, prepare_chat, prepare_completion
from .schemas import ChatCompletionRequest, CompletionRequest
from .state import ServerState

router = APIRouter()


def _state(request: Request) -> ServerState:
    return request.app.state.llm


def _bound_default_max_tokens(prepared: PreparedRequest, default: int) -> PreparedRequest:
    """A chat request that names no max_tokens gets at most ``default`` (not the whole context).

    One request asking for nothing in particular must not hold a sequence for thousands of
    tokens; callers who want more say so (up to the context, as before).
    """
    for job in prepared.jobs:
        budget = job.params.max_tokens
        job.params = replace(
            job.params, max_tokens=default if budget is None else min(budget, default)
        )
    return prepared


@router.get("/health")
async def health(request: Request) -> Response:
    state = _state(request)
    if state.backend is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse(
        {"status": "ok", "model": state.served_names()[0], "backend": state.backend_name}
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    state = _state(request)
    ready = state.require_backend()
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": int(state.started_at or time.time()),
                "owned_by": "enclave",
                "max_model_len": state.max_model_len(ready),
                **_engine_fields(state),
            }
            for name in state.served_names()
        ],
    }


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict:
    state = _state(request)
    ready = state.require_backend()
    if model_id not in state.served_names():
        raise ModelNotFound(model_id, state.served_names())
    return {
        "id": model_id,
        "object": "model",
        "created": int(state.started_at or time.time()),
        "owned_by": "enclave",
        "max_model_len": state.max_model_len(ready),
        **_engine_fields(state),
    }


def _engine_fields(state: ServerState) -> dict:
    """Extra model fields of an engine backend: where it runs and how big it is."""
    info = state.engine_info()
    return {key: value for key, value in info.items() if key != "max_model_len"}


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = _state(request)
    backend = state.require_backend()
    prepared = prepare_chat(
        body, backend, state.backend_name, state.served_names(), state.max_model_len(backend)
    )
    if body.max_tokens is None and body.max_completion_tokens is None:
        prepared = _bound_default_max_tokens(prepared, state.settings.llm_default_max_tokens)
    return await state.require_service().respond(prepared, request)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    state = _state(request)
    backend = state.require_backend()
    prepared = prepare_completion(
        body, backend, state.backend_name, state.served_names(), state.max_model_len(backend)
    )
    return await state.require_service().respond(prepared, request)
