"""The llm_server start path with ENCLAVE_LLM_TENSOR_PARALLEL=2 on CPU: loads a GGUF on two ranks, serves, stops them."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.llm_server.live import LiveServer, settings
from tests.unit.engine.tiny_gguf import write_tiny_llama_gguf
from tests.unit.engine.tp_helpers import live_children


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_server_with_two_ranks_serves_a_chat_completion_and_stops_its_workers(tmp_path):
    from services.llm_server.app import create_app

    model = write_tiny_llama_gguf(tmp_path / "tiny-llama.gguf")
    before = live_children()
    app = create_app(
        settings(
            llm_backend="engine",
            llm_model="tiny-llama",
            llm_model_path=str(model),
            llm_tensor_parallel=2,
            llm_device="cpu",
            llm_dtype="fp32",
            llm_cpu_threads=1,
            llm_max_model_len=256,
            llm_kv_cache_mb=4,
        )
    )
    with LiveServer(app) as live:
        workers = live_children() - before
        assert len(workers) == 1, "rank 1 runs in a worker process"
        [info] = httpx.get(f"{live.url}/v1/models").json()["data"]
        assert info["tensor_parallel"] == 2 and info["device"] == "cpu"
        reply = httpx.post(
            f"{live.url}/v1/chat/completions",
            json={
                "model": "tiny-llama",
                "messages": [{"role": "user", "content": "Hello there"}],
                "max_tokens": 4,
                "temperature": 0,
                "ignore_eos": True,
            },
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 4
        assert 'tensor_parallel="2"' in httpx.get(f"{live.url}/metrics").text
    assert not workers & live_children(), "a rank outlived the server"
