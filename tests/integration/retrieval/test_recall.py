"""Hybrid search finds the gold evidence for the corpus questions (see retriever.evaluation)."""

from __future__ import annotations

import pytest

from ingest.stores.acl import AccessScope
from retriever.evaluation import recall, search_text
from retriever.followup import rewrite_query

pytestmark = pytest.mark.slow

# Measured by bench/retrieval.py (bench/results/retrieval.json, both corpora in one run):
# ours 0.978 at 5 and 0.822 at 1; the naive baseline (1,000-char chunks, BM25 + MiniLM,
# RRF) 0.956 and 0.689. The floors leave two questions at 5 and three at 1 for other CPUs'
# numerics; the one at 1 stays well above the baseline.
BASELINE_RECALL_AT_5 = 0.95
BASELINE_RECALL_AT_1 = 0.78


def test_whole_corpus_is_indexed(corpus_index):
    assert len(corpus_index.documents) == 57
    assert corpus_index.pipeline.lexical_index.count() == corpus_index.chunks
    assert corpus_index.pipeline.vector_store.count() == corpus_index.chunks
    print(
        f"\ningested {len(corpus_index.documents)} documents, {corpus_index.chunks} chunks in {corpus_index.seconds:.1f} s"
    )


def test_recall_beats_the_naive_baseline(corpus_index):
    report = corpus_index.recall("shared corpus")
    assert report.questions == 90
    assert report.recall_at_5 >= BASELINE_RECALL_AT_5
    assert report.recall_at_1 >= BASELINE_RECALL_AT_1


def test_follow_up_rewriting_helps_follow_ups(corpus_index):
    by_id = {q.id: q for q in corpus_index.questions}
    follow_ups = [q for q in corpus_index.questions if q.follow_up_of]
    scope = AccessScope(None)

    def ranked_with(rewrite):
        def ranked(q):
            hits = corpus_index.searcher.search(search_text(q, by_id, rewrite), 5, scope)
            return [(h.document_id, h.page, h.text) for h in hits]

        return ranked

    rewritten = recall(follow_ups, ranked_with(rewrite_query))
    raw = recall(follow_ups, ranked_with(lambda question, history: question))
    print(
        f"\nfollow-ups recall@5: rewritten {rewritten.recall_at_5:.2f}, as asked {raw.recall_at_5:.2f}"
    )
    assert len(follow_ups) == 10
    assert rewritten.recall_at_5 > raw.recall_at_5
    assert rewritten.recall_at_5 >= 0.8


def test_follow_up_detection_on_the_corpus(corpus_index):
    from retriever.followup import is_follow_up

    questions = corpus_index.questions
    missed = [q.id for q in questions if q.follow_up_of and not is_follow_up(q.question)]
    false_alarms = [q.id for q in questions if not q.follow_up_of and is_follow_up(q.question)]
    assert missed == []
    assert len(false_alarms) <= 1, false_alarms


def test_empty_query_is_a_clear_error(corpus_index):
    with pytest.raises(ValueError, match="empty"):
        corpus_index.searcher.search("   ", 5, AccessScope(None))


def test_fts_syntax_in_a_question_still_searches(corpus_index):
    hits = corpus_index.searcher.search('jury "duty AND (court* leave NEAR', 5, AccessScope(None))
    assert hits and hits[0].document_id == "travel-and-leave/leave-types.pdf"
