"""Every mistake a client can make gets a 4xx in OpenAI's error shape, never a 500."""

from __future__ import annotations

import httpx
import openai
import pytest

from .live import MAX_MODEL_LEN, LiveServer, settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Hello"}]


def post(server, path: str, body) -> httpx.Response:
    if isinstance(body, (dict, list)):
        return httpx.post(f"{server.url}{path}", json=body, timeout=60)
    return httpx.post(
        f"{server.url}{path}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


def test_unknown_model_is_404_through_the_client(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-17", messages=HELLO, max_tokens=1)
    assert caught.value.code == "model_not_found"
    assert "gpt-17" in caught.value.message


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "max_tokens": 0}),
        ("/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": -3}),
        ("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "max_completion_tokens": 0}),
    ],
)
def test_max_tokens_below_one_is_400(server, path, body):
    error = error_of(post(server, path, body), 400)
    assert error["param"] in ("max_tokens", "max_completion_tokens")
    assert "at least 1" in error["message"]


def test_max_tokens_beyond_the_context_is_400(server):
    body = {"model": MODEL, "messages": HELLO, "max_tokens": MAX_MODEL_LEN + 1}
    error = error_of(post(server, "/v1/chat/completions", body), 400)
    assert error["code"] == "context_length_exceeded"


def test_prompt_longer_than_the_context_is_400(server):
    long_text = "word " * (MAX_MODEL_LEN + 50)
    chat = error_of(
        post(
            server,
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": long_text}]},
        ),
        400,
    )
    assert chat["code"] == "context_length_exceeded" and "prompt" in chat["message"]
    text = error_of(post(server, "/v1/completions", {"model": MODEL, "prompt": long_text}), 400)
    assert text["code"] == "context_length_exceeded"


def test_prompt_plus_max_tokens_beyond_the_context_is_400(server):
    text = "word " * (MAX_MODEL_LEN - 100)
    body = {"model": MODEL, "prompt": text, "max_tokens": 200}
    error = error_of(post(server, "/v1/completions", body), 400)
    assert error["code"] == "context_length_exceeded" and "plus" in error["message"]


@pytest.mark.parametrize(
    "body,needle",
    [
        ({"model": MODEL, "messages": []}, "at least one"),
        ({"model": MODEL, "messages": "hello"}, "messages"),
        ({"model": MODEL, "messages": [{"content": "no role"}]}, "role"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"model": MODEL, "messages": [{"role": "user"}]}, "content is missing"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "image_url",
        ),
        ({"model": MODEL, "messages": [{"role": "tool", "content": "42"}]}, "tool"),
        ({"model": MODEL}, "messages"),
    ],
)
def test_malformed_messages_are_400(server, body, needle):
    error = error_of(post(server, "/v1/chat/completions", body), 400)
    assert needle in error["message"]


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": MODEL, "messages": HELLO, "temperature": 7}, "temperature"),
        ({"model": MODEL, "messages": HELLO, "top_p": 0}, "top_p"),
        ({"model": MODEL, "messages": HELLO, "n": 0}, "n"),
        ({"model": MODEL, "messages": HELLO, "stop": 5}, "stop"),
        ({"model": MODEL, "messages": HELLO, "top_logprobs": 3}, "top_logprobs"),
        ({"model": MODEL, "messages": HELLO, "logprobs": True, "top_logprobs": 50}, "top_logprobs"),
        ({"model": MODEL, "messages": HELLO, "presence_penalty": 1.0}, "presence_penalty"),
        ({"model": MODEL, "messages": HELLO, "tools": [{"type": "function"}]}, "tools"),
        ({"model": MODEL, "prompt": [1, 2, 3]}, "prompt"),
        ({"model": MODEL, "prompt": "x", "echo": True}, "echo"),
        ({"model": MODEL, "prompt": ""}, "prompt"),
        ({"model": MODEL, "messages": HELLO, "seed": 2**70}, "seed"),
    ],
)
def test_bad_parameters_are_400_and_name_the_parameter(server, body, param):
    path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
    error = error_of(post(server, path, body), 400)
    assert param in (error["param"] or "") or param in error["message"]


def test_body_that_is_not_json_is_400(server):
    error = error_of(post(server, "/v1/chat/completions", b"{not json"), 400)
    assert "JSON" in error["message"]


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
        {"type": "json_object"},
    ],
)
def test_response_format_the_hf_backend_cannot_enforce_is_400(client, response_format):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=4, response_format=response_format
        )
    assert caught.value.code == "response_format_unsupported"
    assert "response_format" in caught.value.message and "hf" in caught.value.message


def test_unknown_route_is_404_in_the_error_shape(server):
    response = httpx.get(f"{server.url}/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["message"]


def test_no_docs_page_that_would_load_cdn_scripts_but_the_schema_is_served(server):
    assert httpx.get(f"{server.url}/docs").status_code == 404
    assert "/v1/chat/completions" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_health_reports_ready(server):
    body = httpx.get(f"{server.url}/health").json()
    assert body == {"status": "ok", "model": MODEL, "backend": "hf"}


def test_a_vanishing_temperature_means_greedy_not_an_error(client):
    kwargs = {"model": MODEL, "messages": HELLO, "max_tokens": 4}
    greedy = client.chat.completions.create(temperature=0, **kwargs).choices[0].message.content
    tiny = client.chat.completions.create(temperature=1e-9, **kwargs).choices[0].message.content
    assert tiny == greedy


def test_models_can_be_retrieved_by_name(client):
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-17")


def test_an_api_key_setting_guards_the_v1_routes(hf_backend):
    from services.llm_server.app import create_app

    with LiveServer(create_app(settings(llm_api_key="s3cret"), backend=hf_backend)) as live:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            error = error_of(httpx.get(f"{live.url}/v1/models", headers=headers), 401)
            assert error["code"] == "invalid_api_key"
        keyed = openai.OpenAI(base_url=f"{live.url}/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in keyed.models.list().data] == [MODEL]
        assert httpx.get(f"{live.url}/health").status_code == 200  # probes need no key
