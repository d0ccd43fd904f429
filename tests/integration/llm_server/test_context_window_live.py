"""The gateway learns its prompt budget from our real llm_server's /v1/models."""

from __future__ import annotations

import asyncio

import pytest

from llm.client import LLMClient
from services.gateway.context_window import ContextWindow

from .live import MAX_MODEL_LEN

MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.slow


def test_gateway_budget_equals_the_servers_max_model_len(server):
    fallback = MAX_MODEL_LEN * 4  # a setting that disagrees must lose to the server
    context = ContextWindow(LLMClient(f"{server.url}/v1", MODEL), fallback)
    assert asyncio.run(context.tokens()) == MAX_MODEL_LEN
    assert context.source == "llm_server"
