"""[n] markers map to sources with a verbatim best-supporting quote; bad markers are ignored."""

from __future__ import annotations

from retriever.citations import extract_citations
from retriever.search import SearchHit

LEAVE = SearchHit(
    "leave:3",
    "leave.pdf",
    "Leave types",
    3,
    "Award leave",
    "You can receive a maximum of 80 hours of award leave in a single fiscal year. "
    "Award leave expires one year after it is issued. Use it before the pay period ends.",
    0.1,
)
TRAVEL = SearchHit(
    "travel:0",
    "travel.md",
    "Travel",
    None,
    None,
    "File your voucher within five business days.\nKeep all receipts.",
    0.05,
)


def test_markers_map_to_sources_with_best_sentence_as_quote():
    cites = extract_citations(
        "Award leave expires a year after it is issued [1]. File vouchers within five days [2].",
        [LEAVE, TRAVEL],
    )
    assert [c.document_id for c in cites] == ["leave.pdf", "travel.md"]
    assert cites[0].quote == "Award leave expires one year after it is issued."
    assert (
        cites[0].page == 3 and cites[0].section == "Award leave" and cites[0].title == "Leave types"
    )
    assert cites[1].quote == "File your voucher within five business days."
    for cite, source in zip(cites, [LEAVE, TRAVEL], strict=False):
        assert cite.quote in source.text


def test_out_of_range_and_duplicate_markers_are_ignored():
    cites = extract_citations(
        "80 hours [1]. Also [0], [3] and [99]. Again [1][1] and [1, 2, 7].", [LEAVE, TRAVEL]
    )
    assert [c.document_id for c in cites] == ["leave.pdf", "travel.md"]


def test_marker_grouping_forms():
    assert len(extract_citations("Both say so [1, 2].", [LEAVE, TRAVEL])) == 2
    assert len(extract_citations("Both say so [2][1].", [LEAVE, TRAVEL])) == 2
    assert extract_citations("See [a] or [1.5] or [].", [LEAVE, TRAVEL]) == []


def test_uncited_answer_drawing_on_a_source_falls_back_to_it():
    cites = extract_citations(
        "You must file your voucher within five business days and keep receipts.", [LEAVE, TRAVEL]
    )
    assert [c.document_id for c in cites] == ["travel.md"]
    assert cites[0].quote == "File your voucher within five business days."


def test_declines_and_unrelated_answers_cite_nothing():
    assert (
        extract_citations("I don't know based on the available documents.", [LEAVE, TRAVEL]) == []
    )
    assert extract_citations("Dogs are welcome on Fridays.", [LEAVE, TRAVEL]) == []
    assert extract_citations("", [LEAVE]) == []
    assert extract_citations("Anything [1].", []) == []


def test_marker_after_the_full_stop_belongs_to_the_sentence_before():
    answer = "Award leave expires after a year. [1] Receipts must be kept. [2]"
    cites = extract_citations(answer, [LEAVE, TRAVEL])
    assert [c.quote for c in cites] == [
        "Award leave expires one year after it is issued.",
        "Keep all receipts.",
    ]
