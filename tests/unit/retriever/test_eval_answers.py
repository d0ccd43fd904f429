"""The answer metrics count what their definitions say, on hand-made outcomes."""

from __future__ import annotations

import pytest

from retriever.eval_answers import AnsweredQuestion, answer_all, score, table, token_f1
from retriever.evaluation import GoldQuestion, asserted

EVIDENCE = (
    "You can carry over a maximum of 240 annual leave hours, from one leave year to the next."
)
PDF_Q = GoldQuestion(
    "q1", "How much leave rolls over?", "leave.pdf", 2, EVIDENCE, True, None, "Up to 240 hours."
)
FOLLOW = GoldQuestion(
    "q2", "And the rest?", "leave.pdf", 2, EVIDENCE, True, "q1", "It is forfeited at year end."
)
NONE_Q = GoldQuestion("q3", "Can I bring my dog?", None, None, None, False, None, None)
CHUNK = f"Leave types\n{EVIDENCE} Anything above is forfeited."
OTHER = "Travel vouchers are due within five business days."


def outcome(question, *, cited, declined=False, ranked=(), answer="Up to 240 hours."):
    sources = [
        {"document_id": "leave.pdf", "page": 2, "text": CHUNK},
        {"document_id": "travel.md", "page": None, "text": OTHER},
    ]
    citations = [
        {"document_id": s["document_id"], "page": s["page"], "quote": s["text"][:20]}
        for s in sources
        if s["document_id"] in cited
    ]
    return AnsweredQuestion(question, list(ranked), answer, declined, citations, sources)


def test_token_f1_is_squad_style():
    assert token_f1("Up to 240 hours.", "up to 240 hours") == 1.0
    assert token_f1("The answer is 240 hours", "240 hours") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("", "240 hours") == 0.0
    assert token_f1("nothing shared", "240 hours") == 0.0


def test_metrics_follow_their_definitions():
    results = [
        outcome(
            PDF_Q,
            cited={"leave.pdf", "travel.md"},
            ranked=[("travel.md", None, OTHER), ("leave.pdf", 2, CHUNK)],
        ),
        outcome(FOLLOW, cited=set(), declined=True, ranked=[("leave.pdf", 3, CHUNK)]),
        outcome(NONE_Q, cited=set(), declined=True),
    ]
    metrics = score(results)
    assert metrics["questions"] == 3 and metrics["answerable"] == 2
    assert (
        metrics["recall_at_1"] == 0.0
    )  # the gold chunk is second for q1, on the wrong page for q2
    assert metrics["recall_at_5"] == 0.5 and metrics["recall_at_20"] == 0.5
    assert metrics["mrr"] == 0.25  # (1/2 + 0) / 2
    assert metrics["citation_precision"] == 0.5  # of q1's two citations, the leave chunk holds it
    assert metrics["citation_recall"] == 0.5
    assert metrics["page_accuracy"] == 0.5
    assert metrics["refusal_accuracy"] == 1.0
    assert metrics["false_refusals"] == 0.5
    assert metrics["follow_up_accuracy"] == 0.0
    assert metrics["answer_f1"] == 0.5  # q1 exact, q2 declined counts 0
    assert "citation_precision" in table(metrics)


def test_follow_ups_get_the_turn_they_follow_as_history():
    seen = {}

    def answer_one(question, history):
        seen[question.id] = history
        return outcome(question, cited=set(), answer=f"shown for {question.id}")

    answer_all([PDF_Q, FOLLOW], answer_one)
    assert seen["q1"] == []
    assert seen["q2"] == [
        {"role": "user", "content": PDF_Q.question},
        {"role": "assistant", "content": "shown for q1"},
    ]


def test_asserted_turns_a_question_into_a_claim():
    assert asserted("Can I take a paid sabbatical after five years of service?") == (
        "Yes. You can take a paid sabbatical after five years of service."
    )
    assert asserted("Is there a bonus for referrals?") == "Yes. There is a bonus for referrals."
