"""Reciprocal rank fusion: merge ranked lists by rank alone, so scores on different scales mix."""

from __future__ import annotations

from collections.abc import Sequence


def reciprocal_rank_fusion(
    rankings: list[list[str]], k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Fuse rankings (best first) into [(id, score)], best first.

    score(id) = sum over rankings of weight / (k + rank), rank starting at 1; an id missing
    from a ranking gets nothing from it. Ties keep the order in which ids were first seen,
    so the result is deterministic. A duplicate id within one ranking counts once, at its
    best rank.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, not {k}")
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        seen: set[str] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    order = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda pair: (-pair[1], order[pair[0]]))
