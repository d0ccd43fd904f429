"""Live LLM servers for the integration tests: the real HF backend on the packaged SmolLM2 GGUF.

The model loads once per session (about 20 s); every server below shares it. Servers run
in-process under uvicorn on free ports, so tests speak real HTTP with real clients.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from .live import MAX_MODEL_LEN, LiveServer, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def hf_backend():
    from llm.loader.packaged import PackagedModelMissing, smollm2_gguf_path

    try:
        path = smollm2_gguf_path()
    except PackagedModelMissing as exc:
        pytest.skip(f"SmolLM2 GGUF not installed: {exc}")
    from services.llm_server.backends.hf import HFBackend

    # One thread: the test machine's few cores are shared, and OpenMP threads thrash under contention.
    backend = HFBackend(path, "smollm2-135m-instruct", MAX_MODEL_LEN, cpu_threads=1)
    asyncio.run(backend.start())
    yield backend
    asyncio.run(backend.close())


@pytest.fixture(scope="session")
def server(hf_backend) -> Iterator[LiveServer]:
    from services.llm_server.app import create_app

    app = create_app(settings(llm_max_model_len=MAX_MODEL_LEN), backend=hf_backend)
    with LiveServer(app) as live:
        yield live


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def tokenizer(hf_backend):
    return hf_backend.tokenizer
