"""The remote backend: `python -m services.llm_server` forwarding to our own HF server over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from .live import MAX_MODEL_LEN, LiveServer, free_port, settings, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[3]
PROXY_MODEL = "enclave-proxy"
UPSTREAM_MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Name a fruit."}]


@pytest.fixture(scope="module")
def proxy(server):
    """A real server process (the module's entry point) with llm_backend=remote, upstream = ``server``.

    The egress guard is on: where ``services.egress_guard`` exists it is installed, where it
    does not the server starts anyway (with a warning)."""
    port = free_port()
    env = {
        **os.environ,
        "ENCLAVE_LLM_BACKEND": "remote",
        "ENCLAVE_LLM_REMOTE_URL": f"{server.url}/v1",
        "ENCLAVE_LLM_PORT": str(port),
        "ENCLAVE_LLM_HOST": "127.0.0.1",
        "ENCLAVE_LLM_MODEL": PROXY_MODEL,
        # loopback only: the guard (where services.egress_guard exists) must not get in the way
        "ENCLAVE_EGRESS_GUARD": "true",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.llm_server"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"proxy exited: {process.stdout.read().decode()[-2000:]}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=90, what="the proxy server to start")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def proxy_client(proxy):
    return openai.OpenAI(base_url=f"{proxy}/v1", api_key="unused", max_retries=0, timeout=120)


def test_proxy_serves_its_own_name_with_the_upstream_context(proxy_client):
    models = proxy_client.models.list().data
    assert [m.id for m in models] == [PROXY_MODEL]
    assert models[0].model_extra["max_model_len"] == MAX_MODEL_LEN


def test_greedy_chat_through_the_proxy_equals_the_upstream(proxy_client, client):
    direct = client.chat.completions.create(
        model=UPSTREAM_MODEL, messages=QUESTION, max_tokens=5, temperature=0
    )
    proxied = proxy_client.chat.completions.create(
        model=PROXY_MODEL, messages=QUESTION, max_tokens=5, temperature=0
    )
    assert proxied.choices[0].message.content == direct.choices[0].message.content
    assert proxied.choices[0].finish_reason == direct.choices[0].finish_reason
    assert proxied.usage.model_dump() == direct.usage.model_dump()
    assert proxied.model == PROXY_MODEL


def test_seeded_sampling_and_n_pass_through(proxy_client, client):
    kwargs = {"messages": QUESTION, "max_tokens": 4, "temperature": 1.0, "seed": 11}
    direct = client.chat.completions.create(model=UPSTREAM_MODEL, n=2, **kwargs)
    proxied = proxy_client.chat.completions.create(model=PROXY_MODEL, n=2, **kwargs)
    assert [c.message.content for c in proxied.choices] == [
        c.message.content for c in direct.choices
    ]


def test_stream_with_stop_and_usage_through_the_proxy(proxy_client, client):
    kwargs = {"messages": QUESTION, "max_tokens": 6, "temperature": 0}
    full = client.chat.completions.create(model=UPSTREAM_MODEL, **kwargs).choices[0].message.content
    stop = full.split()[1]
    expected = client.chat.completions.create(model=UPSTREAM_MODEL, stop=stop, **kwargs)
    chunks = list(
        proxy_client.chat.completions.create(
            model=PROXY_MODEL,
            stop=stop,
            stream=True,
            stream_options={"include_usage": True},
            **kwargs,
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == expected.choices[0].message.content
    )
    assert chunks[-1].usage.model_dump() == expected.usage.model_dump()


def test_text_completion_through_the_proxy(proxy_client, client):
    direct = client.completions.create(
        model=UPSTREAM_MODEL, prompt="Apples are", max_tokens=4, temperature=0
    )
    proxied = proxy_client.completions.create(
        model=PROXY_MODEL, prompt="Apples are", max_tokens=4, temperature=0
    )
    assert proxied.choices[0].text == direct.choices[0].text
    assert proxied.usage.prompt_tokens == direct.usage.prompt_tokens


def test_upstream_refusals_reach_the_client_with_their_message(proxy, proxy_client):
    long_text = "word " * (MAX_MODEL_LEN + 50)
    with pytest.raises(openai.BadRequestError) as too_long:
        proxy_client.chat.completions.create(
            model=PROXY_MODEL, messages=[{"role": "user", "content": long_text}]
        )
    assert "context" in too_long.value.message
    with pytest.raises(openai.BadRequestError) as unsupported:
        proxy_client.chat.completions.create(
            model=PROXY_MODEL,
            messages=QUESTION,
            max_tokens=3,
            response_format={"type": "json_object"},
        )
    assert "response_format" in unsupported.value.message
    with pytest.raises(openai.NotFoundError):
        proxy_client.chat.completions.create(model=UPSTREAM_MODEL, messages=QUESTION, max_tokens=3)


def test_disconnect_at_the_proxy_cancels_the_upstream_generation(proxy, hf_backend):
    cancelled = hf_backend.stats()["requests_cancelled"]
    body = {
        "model": PROXY_MODEL,
        "messages": QUESTION,
        "max_tokens": 400,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{proxy}/v1/chat/completions", json=body) as response:
            contents = 0
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get(
                    "content"
                ):
                    contents += 1
                    if contents == 2:
                        break
    wait_for(
        lambda: hf_backend.stats()["requests_cancelled"] > cancelled,
        what="the upstream generation to be cancelled",
    )


def test_unreachable_upstream_is_502_with_a_clear_message():
    from services.llm_server.app import create_app

    dead = f"http://127.0.0.1:{free_port()}/v1"
    with LiveServer(create_app(settings(llm_backend="remote", llm_remote_url=dead))) as live:
        response = httpx.post(
            f"{live.url}/v1/chat/completions",
            json={"model": UPSTREAM_MODEL, "messages": QUESTION, "max_tokens": 2},
        )
        assert response.status_code == 502
        assert "unreachable" in response.json()["error"]["message"]


def test_remote_backend_without_url_fails_at_start_with_the_setting_name():
    from services.llm_server.backends import build_backend
    from services.llm_server.backends.base import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="ENCLAVE_LLM_REMOTE_URL"):
        build_backend(settings(llm_backend="remote", llm_remote_url=None))
