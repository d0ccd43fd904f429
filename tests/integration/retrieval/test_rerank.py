"""The rerank stage and the stage switches of HybridSearcher, on the real model and stores."""

from __future__ import annotations

import pytest

from ingest.stores.acl import AccessScope
from retriever.rerank import LateInteractionReranker
from retriever.search import HybridSearcher, SearchOptions

from .conftest import write

pytestmark = pytest.mark.slow

DOCS = {
    "hotels.md": "# Travel\n\n## Hotels\n\nRooms are capped at 300 USD a night, taxes and parking included.\n",
    "dental.md": "# Benefits\n\n## Dental\n\nThe dental plan pays for two cleanings every year.\n",
    "canteen.md": "# Canteen\n\n## Opening hours\n\nThe canteen opens at eight and serves lunch until two.\n",
}


@pytest.fixture(scope="module")
def three_docs(small_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rerank_docs")
    for name, text in DOCS.items():
        small_store.ingest(write(folder / name, text), document_id=f"rerank-{name}")
    yield small_store
    for name in DOCS:
        small_store.delete(f"rerank-{name}")


def test_late_interaction_prefers_the_passage_that_answers(embedder):
    reranker = LateInteractionReranker(embedder, cache_size=2)
    passages = [
        ("Benefits > Dental", "The dental plan pays for two cleanings every year."),
        ("Travel > Hotels", "Rooms are capped at 300 USD a night, taxes and parking included."),
        ("Canteen", "The canteen opens at eight and serves lunch until two."),
    ]
    scores = reranker.scores("What is the most I can pay for a hotel per night?", passages)
    assert len(scores) == 3
    assert scores[1] == max(scores)
    again = reranker.scores("What is the most I can pay for a hotel per night?", passages)
    assert again == pytest.approx(scores, abs=1e-3)  # the LRU (size 2) returns what it computed


class _FavourCanteen:
    """A reranker that only likes canteen passages: it must be able to move them up."""

    def scores(self, query, passages):
        return [1.0 if "canteen" in text else 0.0 for _, text in passages]


def test_the_rerank_order_is_fused_with_the_first_stage(three_docs):
    store = three_docs
    plain = HybridSearcher(store.vector_store, store.lexical_index, store.embedder)
    query = "hotel room price per night"
    first = plain.search(query, 3, AccessScope(None))
    assert first[0].document_id == "rerank-hotels.md"
    canteen_rank = [h.document_id for h in first].index("rerank-canteen.md")

    reranked = HybridSearcher(
        store.vector_store,
        store.lexical_index,
        store.embedder,
        options=SearchOptions(reranker=_FavourCanteen(), rerank_weight=3.0),
    ).search(query, 3, AccessScope(None))
    assert [h.document_id for h in reranked].index("rerank-canteen.md") < canteen_rank
    assert {h.chunk_id for h in reranked} == {h.chunk_id for h in first}


class _CountingEmbedder:
    def __init__(self, inner):
        self.inner, self.queries = inner, 0

    def embed_query(self, text):
        self.queries += 1
        return self.inner.embed_query(text)


def test_a_zero_weight_skips_that_store(three_docs):
    store = three_docs
    counting = _CountingEmbedder(store.embedder)
    lexical_only = HybridSearcher(
        store.vector_store,
        store.lexical_index,
        counting,
        options=SearchOptions(dense_weight=0.0),
        batch_queries=False,  # count the searcher's own embed_query calls
    )
    hits = lexical_only.search("canteen lunch", 3, AccessScope(None))
    assert counting.queries == 0
    assert hits[0].document_id == "rerank-canteen.md"
    dense_only = HybridSearcher(
        store.vector_store,
        store.lexical_index,
        counting,
        options=SearchOptions(lexical_weight=0),
        batch_queries=False,
    )
    assert dense_only.search("zzqx", 3, AccessScope(None))  # no shared word, dense still finds
    assert counting.queries == 1


def test_production_searcher_reranks_and_can_be_told_not_to(three_docs, embedder):
    config = three_docs.config
    assert HybridSearcher.from_config(config, embedder=embedder).options.reranker is not None
    plain = HybridSearcher.from_config(config, embedder=embedder, rerank=False)
    assert plain.options.reranker is None
    hits = HybridSearcher.from_config(config, embedder=embedder).search(
        "how much can a hotel cost", 2, AccessScope(None)
    )
    assert hits[0].document_id == "rerank-hotels.md"
