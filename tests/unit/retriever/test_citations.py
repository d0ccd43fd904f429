"""Answers are attributed sentence by sentence to the sources that support them (MiniLM + words).

The answers are written by hand, not generated: paraphrases that must be cited,
contradictions and made-up sentences that must not. Each case sits far from the
threshold (see docs/attribution.md), so numerics of another CPU do not flip it.
"""

from __future__ import annotations

import pytest

from ingest.embedder import Embedder
from retriever.citations import DECLINE_MESSAGE, ground_answer, is_decline
from retriever.search import SearchHit
from tests.torch_threads import _one_torch_thread  # noqa: F401  (MiniLM on shared cores)

pytestmark = pytest.mark.slow

LEAVE = SearchHit(
    "leave:3",
    "leave-types.pdf",
    "Leave types",
    3,
    "Award leave",
    "You can carry over a maximum of 240 annual leave hours, from one leave year to the next. "
    "Award leave expires one year after it is issued. You must use it by the end of the pay "
    "period in which the expiration date falls.",
    0.1,
)
MILITARY = SearchHit(
    "military:0",
    "military-leave.md",
    "Military leave",
    None,
    "Emergency duty",
    "Military leave\nReservists called to emergency duty are granted 42 extra days of military "
    "leave per year.\nTell your supervisor as soon as you receive orders.",
    0.08,
)
TRAVEL = SearchHit(
    "travel:0",
    "travel.md",
    "Travel",
    None,
    None,
    "File your travel voucher within five business days of returning.\nKeep all receipts.",
    0.05,
)
SOURCES = [LEAVE, MILITARY, TRAVEL]


@pytest.fixture(scope="module")
def embed():
    return Embedder().embed_documents


def cited(answer: str, embed, sources=SOURCES) -> list[str]:
    return [c.document_id for c in ground_answer(answer, sources, embed).citations]


@pytest.mark.parametrize(
    "answer, document_id",
    [
        (
            "You may roll over up to 240 hours of annual leave into the next leave year.",
            "leave-types.pdf",
        ),
        ("Award leave runs out a year after it's issued.", "leave-types.pdf"),
        (
            "Reservists on emergency duty get 42 additional days of military leave each year.",
            "military-leave.md",
        ),
        (
            "Submit your travel voucher no later than five business days after you get back.",
            "travel.md",
        ),
    ],
)
def test_paraphrases_are_attributed_to_their_source(answer, document_id, embed):
    grounded = ground_answer(answer, SOURCES, embed)
    assert not grounded.declined
    assert [c.document_id for c in grounded.citations] == [document_id]
    source = next(s for s in SOURCES if s.document_id == document_id)
    quote = grounded.citations[0].quote
    assert quote and quote in source.text
    assert grounded.citations[0].page == source.page
    assert grounded.answer == answer


@pytest.mark.parametrize(
    "answer",
    [
        "The policy does not allow extra days of military leave for emergency duty.",
        "Reservists called to emergency duty are granted 14 extra days of military leave.",
        "You can carry over a maximum of 400 annual leave hours to the next leave year.",
        "Award leave never expires.",
        "Employees may bring their dogs to the office on Fridays.",
        "I don't know based on the available documents.",
    ],
)
def test_contradicting_or_unsupported_answers_become_the_decline(answer, embed):
    grounded = ground_answer(answer, SOURCES, embed)
    assert grounded.declined and is_decline(grounded.answer)
    assert grounded.citations == []
    assert grounded.answer.startswith(DECLINE_MESSAGE)
    # the nearest sources are named so the reader knows where to look
    assert "Leave types, page 3, Award leave" in grounded.answer
    assert grounded.sources == SOURCES


def test_only_supported_sentences_are_cited_in_order_of_first_use(embed):
    answer = (
        "Submit the travel voucher within five business days of your return. "
        "Dogs are welcome in the office on Fridays. "
        "You can carry over at most 240 hours of annual leave to the next leave year."
    )
    grounded = ground_answer(answer, SOURCES, embed)
    assert [c.document_id for c in grounded.citations] == ["travel.md", "leave-types.pdf"]
    reasons = [s.supported for s in grounded.attribution.sentences]
    assert reasons == [True, False, True]


def test_markers_are_ignored_and_removed(embed):
    # the model put [1] (the leave source) on a travel fact and [3] on nothing relevant
    grounded = ground_answer(
        "File your travel voucher within five business days of returning [1][3].", SOURCES, embed
    )
    assert [c.document_id for c in grounded.citations] == ["travel.md"]
    assert "[" not in grounded.answer


def test_answer_joining_two_source_sentences_quotes_both(embed):
    grounded = ground_answer(
        "Award leave expires one year after it is issued and must be used by the end of that pay period.",
        [LEAVE],
        embed,
    )
    assert [c.document_id for c in grounded.citations] == ["leave-types.pdf"]
    assert "expires one year" in grounded.citations[0].quote


def test_no_sources_or_empty_answer_declines_without_listing(embed):
    assert ground_answer("Anything at all is allowed.", [], embed).answer == DECLINE_MESSAGE
    assert ground_answer("", SOURCES, embed).declined
    assert ground_answer("Yes.", SOURCES, embed).declined
