"""Reciprocal rank fusion orders by summed 1/(k+rank)."""

from __future__ import annotations

import pytest

from retriever.fusion import reciprocal_rank_fusion


def test_items_in_both_lists_beat_items_in_one():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)
    ids = [i for i, _ in fused]
    assert ids[:2] == ["a", "c"]
    assert set(ids) == {"a", "b", "c", "d"}
    assert dict(fused)["a"] == pytest.approx(1 / 61 + 1 / 62)


def test_k_controls_how_much_top_ranks_dominate():
    rankings = [["x", "y"], ["y", "z"], ["x", "w"]]
    assert [i for i, _ in reciprocal_rank_fusion(rankings, k=0)][0] == "x"


def test_ties_keep_first_seen_order_and_duplicates_count_once():
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "a"]])
    assert [i for i, _ in fused] == ["a", "b"]
    once = reciprocal_rank_fusion([["a", "a", "b"]])
    assert dict(once)["a"] == pytest.approx(1 / 61)


def test_weights_and_empty_inputs():
    assert reciprocal_rank_fusion([]) == []
    assert reciprocal_rank_fusion([[], []]) == []
    fused = reciprocal_rank_fusion([["a"], ["b"]], weights=[1.0, 2.0])
    assert fused[0][0] == "b"
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], weights=[1.0, 2.0])
