"""Request checks that need no model: context arithmetic, message rendering, model names."""

from __future__ import annotations

import pytest

from services.llm_server.errors import InvalidRequest, ModelNotFound
from services.llm_server.prepare import chat_messages, check_model, fit_max_tokens
from services.llm_server.schemas import ChatMessage


def test_max_tokens_defaults_to_what_the_context_leaves():
    assert fit_max_tokens(None, 100, 1024) == 924
    assert fit_max_tokens(24, 1000, 1024) == 24


@pytest.mark.parametrize(
    "requested,prompt,code",
    [
        (0, 10, None),
        (-1, 10, None),
        (2000, 10, "context_length_exceeded"),
        (None, 1024, "context_length_exceeded"),
        (25, 1000, "context_length_exceeded"),
    ],
)
def test_budgets_that_cannot_fit_are_refused(requested, prompt, code):
    with pytest.raises(InvalidRequest) as caught:
        fit_max_tokens(requested, prompt, 1024)
    assert caught.value.status == 400 and caught.value.code == code


def test_unknown_prompt_length_only_checks_the_request_itself():
    assert fit_max_tokens(None, None, 1024) is None
    with pytest.raises(InvalidRequest):
        fit_max_tokens(5000, None, 1024)


def test_messages_are_flattened_to_text_and_developer_becomes_system():
    messages = [
        ChatMessage(role="developer", content="be brief"),
        ChatMessage(
            role="user", content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
        ),
    ]
    assert chat_messages(messages) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab"},
    ]


def test_model_names_are_checked_and_an_absent_one_means_the_default():
    assert check_model(None, ["m", "alias"]) == "m"
    assert check_model("alias", ["m", "alias"]) == "alias"
    with pytest.raises(ModelNotFound) as caught:
        check_model("other", ["m"])
    assert caught.value.status == 404 and caught.value.body()["error"]["code"] == "model_not_found"
