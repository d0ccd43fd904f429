"""Follow-up rewriting: short back-referring questions get the previous question folded in."""

from __future__ import annotations

import pytest

from retriever.followup import is_follow_up, rewrite_query

HISTORY = [
    {"role": "user", "content": "Is there a limit on award leave?"},
    {"role": "assistant", "content": "Yes, 80 hours [1]."},
]


@pytest.mark.parametrize(
    "question",
    [
        "And when does it expire?",
        "Who can I report it to?",
        "What about contractors?",
        "When is that usually paid out?",
    ],
)
def test_follow_ups_are_expanded(question):
    assert is_follow_up(question)
    assert rewrite_query(question, HISTORY) == f"Is there a limit on award leave? {question}"


@pytest.mark.parametrize(
    "question",
    [
        "Can I bring my dog to the office?",
        "How many credit hours can I have banked at one time?",
        "My computer is behaving strangely and I think it might be compromised. Should I shut it down?",
    ],
)
def test_standalone_questions_pass_through(question):
    assert rewrite_query(question, HISTORY) == question


def test_no_history_means_no_rewrite():
    assert rewrite_query("And when does it expire?", []) == "And when does it expire?"
    assert (
        rewrite_query("And when does it expire?", [{"role": "assistant", "content": "Hi"}])
        == "And when does it expire?"
    )
