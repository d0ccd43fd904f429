"""Cancellation on disconnect, 503 when the queue is full, and the /metrics exposition."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from .live import LiveServer, metric_value, settings, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODEL = "smollm2-135m-instruct"
LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Count to one thousand."}],
    "max_tokens": 400,
    "ignore_eos": True,
    "temperature": 0,
    "stream": True,
}


def read_content_chunks(response: httpx.Response, wanted: int) -> list[str]:
    """Read SSE lines until ``wanted`` chunks with content arrived."""
    pieces = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if delta.get("content"):
                pieces.append(delta["content"])
                if len(pieces) >= wanted:
                    return pieces
    raise AssertionError("stream ended early")


def test_client_disconnect_mid_stream_cancels_the_generation(server, hf_backend):
    before = hf_backend.stats()
    aborted_before = metric_value(
        server.url, "enclave_llm_finished_choices_total", 'finish_reason="abort"'
    )
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{server.url}/v1/chat/completions", json=LONG) as response:
            assert response.status_code == 200
            read_content_chunks(response, 3)
    # The backend sees the cancellation: its job ends as cancelled, long before 400 tokens.
    wait_for(
        lambda: hf_backend.stats()["requests_cancelled"] > before["requests_cancelled"],
        what="the backend to cancel the abandoned generation",
    )
    produced = hf_backend.stats()["generation_tokens"] - before["generation_tokens"]
    assert 3 <= produced < 400
    wait_for(
        lambda: (
            metric_value(server.url, "enclave_llm_finished_choices_total", 'finish_reason="abort"')
            > aborted_before
        ),
        what="the abort metric",
    )
    assert metric_value(server.url, "enclave_llm_requests_running") == 0


def test_a_request_abandoned_while_waiting_never_runs(server, hf_backend):
    before = hf_backend.stats()
    url = f"{server.url}/v1/chat/completions"
    payload = json.dumps(LONG).encode()
    raw = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", url, json=LONG) as running:
            read_content_chunks(running, 1)
            # A second request waits behind the first; its client leaves before any answer byte.
            waiting = socket.create_connection(("127.0.0.1", server.port))
            waiting.sendall(raw)
            wait_for(
                lambda: metric_value(server.url, "enclave_llm_queue_depth") == 1,
                what="the request to wait",
            )
            waiting.close()
            wait_for(
                lambda: metric_value(server.url, "enclave_llm_queue_depth") == 0,
                what="the server to notice the departure",
            )
    wait_for(
        lambda: hf_backend.stats()["requests_cancelled"] >= before["requests_cancelled"] + 2,
        what="both generations to be cancelled",
    )
    assert hf_backend.stats()["requests_completed"] == before["requests_completed"]


def test_queue_full_is_503_and_the_queue_drains(hf_backend):
    from services.llm_server.app import create_app

    with LiveServer(create_app(settings(llm_max_queue=1), backend=hf_backend)) as live:
        url = f"{live.url}/v1/chat/completions"
        waiting_result: dict = {}

        def waiting_request() -> None:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 1,
            }
            waiting_result["response"] = httpx.post(url, json=body, timeout=120)

        with httpx.Client(timeout=60) as http:
            with http.stream("POST", url, json=LONG) as running:
                read_content_chunks(running, 1)  # the first request is running
                waiter = threading.Thread(target=waiting_request)
                waiter.start()
                wait_for(
                    lambda: metric_value(live.url, "enclave_llm_queue_depth") == 1,
                    what="the second request to wait",
                )
                refused = httpx.post(
                    url,
                    json={
                        "model": MODEL,
                        "messages": [{"role": "user", "content": "x"}],
                        "max_tokens": 1,
                    },
                    timeout=60,
                )
                assert refused.status_code == 503
                error = refused.json()["error"]
                assert error["code"] == "queue_full" and "retry" in error["message"]
        # closing the running stream frees the model; the waiting request completes
        waiter.join(timeout=120)
        assert waiting_result["response"].status_code == 200
        assert waiting_result["response"].json()["choices"][0]["message"]["content"] is not None
        assert metric_value(live.url, "enclave_llm_queue_depth") == 0
        assert (
            metric_value(
                live.url,
                "enclave_llm_requests_total",
                'endpoint="/v1/chat/completions",status="503"',
            )
            == 1
        )


def test_metrics_expose_the_documented_names_after_requests(server, client):
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0
    )
    httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": []})
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "enclave_llm_requests_total",
        "enclave_llm_queue_depth",
        "enclave_llm_requests_running",
        "enclave_llm_prompt_tokens_total",
        "enclave_llm_generation_tokens_total",
        "enclave_llm_finished_choices_total",
        "enclave_llm_time_to_first_token_seconds_bucket",
        "enclave_llm_inter_token_latency_seconds_bucket",
        "enclave_llm_request_duration_seconds_count",
        "enclave_llm_backend_requests_completed",
    ):
        assert f"\n{name}" in text, name
    assert (
        metric_value(
            server.url, "enclave_llm_requests_total", 'endpoint="/v1/chat/completions",status="200"'
        )
        >= 1
    )
    assert (
        metric_value(
            server.url, "enclave_llm_requests_total", 'endpoint="/v1/chat/completions",status="400"'
        )
        >= 1
    )
    assert metric_value(server.url, "enclave_llm_generation_tokens_total") >= 3
    assert metric_value(server.url, "enclave_llm_time_to_first_token_seconds_count") >= 1
    assert metric_value(server.url, "enclave_llm_inter_token_latency_seconds_count") >= 1
