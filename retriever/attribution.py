"""Find, for each sentence of an answer, the source sentences that support it.

Attribution never depends on the model writing ``[n]``: small models forget markers or
put them on the wrong source. Each answer sentence that makes a claim (has content
words) is compared with every sentence of every source, and with every pair of
adjacent source sentences (an answer often joins two). A candidate's support is

    support = LEXICAL_WEIGHT * lexical + (1 - LEXICAL_WEIGHT) * semantic

where ``lexical`` is the share of the answer sentence's content words found in the
candidate and ``semantic`` the cosine of their MiniLM embeddings (a pair's embedding is
the normalised mean of its two sentences', which halves the embedding work per answer). The best candidate
supports the sentence when ``support >= SUPPORT_THRESHOLD`` and it does not contradict
it: every number the sentence states occurs in that source, and a negated sentence
("does not allow extra days") needs a negated candidate. (The other direction is not
checked: on the corpus, source sentences carry side negations, "if you do not yet have
access", far more often than a correct answer drops one; bench/attribution.py.)

The weight and threshold were set by measurement on the shared corpus (gold answers
against the passages retrieved for their question vs for other questions, and
unanswerable questions asserted as facts); bench/attribution.py reproduces it and
docs/attribution.md records the figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from retriever.sentences import (
    content_words,
    is_negated,
    numbers,
    sentence_spans,
    split_sentences,
    strip_markers,
)

LEXICAL_WEIGHT = 0.5
SUPPORT_THRESHOLD = 0.55

EmbedTexts = Callable[[list[str]], Sequence[Sequence[float]]]


@dataclass(frozen=True)
class SentenceSupport:
    """How one answer sentence is (or is not) backed by the sources."""

    sentence: str
    source_index: int | None
    quote: str | None
    lexical: float
    semantic: float
    support: float
    supported: bool
    reason: str  # supported | weak | number_mismatch | negation_mismatch | no_sources


@dataclass(frozen=True)
class Attribution:
    """Per-sentence support of an answer; ``cited`` lists source indexes, first supported first."""

    sentences: list[SentenceSupport]

    @property
    def supported(self) -> bool:
        return any(s.supported for s in self.sentences)

    @property
    def cited(self) -> list[int]:
        order: list[int] = []
        for s in self.sentences:
            if s.supported and s.source_index is not None and s.source_index not in order:
                order.append(s.source_index)
        return order

    def best_quote(self, source_index: int) -> str:
        """The quote of the strongest supported sentence attributed to ``source_index``."""
        best = max(
            (s for s in self.sentences if s.supported and s.source_index == source_index),
            key=lambda s: s.support,
        )
        return best.quote or ""


@dataclass(frozen=True)
class _Candidate:
    source_index: int
    quote: str
    first: int  # index of its first sentence in the list of all source sentences
    last: int  # index of its last sentence (first + 1 for a pair)


def _candidates(source_texts: Sequence[str]) -> tuple[list[_Candidate], list[str]]:
    """Every sentence, and every pair of adjacent sentences, of every source (verbatim),
    and the list of single sentences their ``first``/``last`` index."""
    out: list[_Candidate] = []
    singles: list[str] = []
    for index, text in enumerate(source_texts):
        spans = sentence_spans(text)
        base = len(singles)
        singles.extend(text[span.start : span.end] for span in spans)
        for i, span in enumerate(spans):
            out.append(_Candidate(index, text[span.start : span.end], base + i, base + i))
            if i + 1 < len(spans):
                out.append(
                    _Candidate(index, text[span.start : spans[i + 1].end], base + i, base + i + 1)
                )
    return out, singles


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def claim_sentences(answer: str) -> list[str]:
    """Answer sentences that state something (markers removed, "Yes." and the like dropped)."""
    return [s for s in split_sentences(strip_markers(answer)) if content_words(s)]


def lexical_share(claim: str, candidate: str) -> float:
    """Share of the claim's content words that the candidate contains (0..1)."""
    claim_words = content_words(claim)
    if not claim_words:
        return 0.0
    return len(claim_words & content_words(candidate)) / len(claim_words)


def attribute(
    answer: str,
    source_texts: Sequence[str],
    embed: EmbedTexts,
    *,
    lexical_weight: float = LEXICAL_WEIGHT,
    threshold: float = SUPPORT_THRESHOLD,
) -> Attribution:
    """Support of each claim sentence of ``answer`` by ``source_texts`` (see module doc).

    ``lexical_weight`` and ``threshold`` exist for the measurement that set their
    defaults (bench/attribution.py); callers keep the defaults."""
    claims = claim_sentences(answer)
    candidates, singles = _candidates(source_texts)
    if not claims:
        return Attribution([])
    if not candidates:
        return Attribution(
            [SentenceSupport(c, None, None, 0.0, 0.0, 0.0, False, "no_sources") for c in claims]
        )
    # only single sentences are embedded; a pair is the mean of its two (half the work)
    vectors = _unit(np.asarray(embed(claims + singles), dtype=np.float32))
    sentence_vectors = vectors[len(claims) :]
    candidate_vectors = _unit(
        np.stack([sentence_vectors[c.first] + sentence_vectors[c.last] for c in candidates])
    )
    semantic = vectors[: len(claims)] @ candidate_vectors.T
    candidate_words = [content_words(c.quote) for c in candidates]
    source_numbers = [numbers(text) for text in source_texts]
    results = []
    for row, claim in enumerate(claims):
        claim_words = content_words(claim)
        lexical = np.array(
            [len(claim_words & words) / len(claim_words) for words in candidate_words]
        )
        scores = lexical_weight * lexical + (1 - lexical_weight) * semantic[row]
        best = int(np.argmax(scores))
        candidate = candidates[best]
        reason = "supported"
        if scores[best] < threshold:
            reason = "weak"
        elif not numbers(claim) <= source_numbers[candidate.source_index]:
            reason = "number_mismatch"
        elif is_negated(claim) and not is_negated(candidate.quote):
            reason = "negation_mismatch"
        results.append(
            SentenceSupport(
                sentence=claim,
                source_index=candidate.source_index,
                quote=candidate.quote,
                lexical=float(lexical[best]),
                semantic=float(semantic[row, best]),
                support=float(scores[best]),
                supported=reason == "supported",
                reason=reason,
            )
        )
    return Attribution(results)
