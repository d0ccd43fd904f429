"""The evidence rule used to score retrieval: normalisation, in-order word share, doc/page."""

from __future__ import annotations

from retriever.evaluation import GoldQuestion, evidence_share, normalise, supports

EVIDENCE = (
    "You can carry over a maximum of 240 annual leave hours, from one leave year to the next."
)


def _q(doc="leave.pdf", page=2):
    return GoldQuestion("q1", "How many hours roll over?", doc, page, EVIDENCE, True, None)


def test_normalise_folds_like_verify_py():
    assert normalise("It\u2019s  \u201cfine\u201d \u2014 OK\u00a0now") == 'it\'s "fine" - ok now'


def test_share_counts_words_in_order():
    assert evidence_share(EVIDENCE, "intro. " + EVIDENCE.upper() + " outro") == 1.0
    half = "You can carry over a maximum of 240 annual"
    assert 0.4 < evidence_share(EVIDENCE, half) < 0.6
    shuffled = " ".join(reversed(EVIDENCE.split()))
    assert evidence_share(EVIDENCE, shuffled) < 0.3


def test_supports_needs_right_document_page_and_enough_words():
    cut = "• You can carry over a maximum of 240 annual leave hours, from one leave"  # a chunk boundary
    assert supports(_q(), "leave.pdf", 2, cut)
    assert not supports(_q(), "leave.pdf", 3, cut)
    assert not supports(_q(), "other.pdf", 2, cut)
    assert not supports(_q(), "leave.pdf", 2, "Annual leave accrues every pay period.")
    assert supports(_q(doc="leave.md", page=None), "leave.md", None, EVIDENCE)
    unanswerable = GoldQuestion("q2", "Dogs?", None, None, None, False, None)
    assert not supports(unanswerable, "leave.md", None, EVIDENCE)
