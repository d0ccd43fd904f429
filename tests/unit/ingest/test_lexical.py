"""Both lexical indexes (SQLite FTS5, PostgreSQL full-text): ranking, query escaping,
ACL applied inside the SQL, deletes. Every test runs against both backends."""

from __future__ import annotations

import pytest

from ingest.chunking import Chunk
from ingest.stores.acl import AccessScope, chunk_acl_column
from ingest.stores.lexical import LexicalIndex, match_expression
from ingest.stores.lexical_pg import PostgresLexicalIndex, tsquery_expression
from tests.support import throwaway_postgres_database


def _chunk(doc, n, text, section=None):
    return Chunk(f"{doc}:{n}", doc, n, text, f"Title of {doc}", None, section)


@pytest.fixture(scope="module")
def postgres_lexical_url():
    with throwaway_postgres_database("enclave_lexical") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def make_index(request, tmp_path):
    """Builds an empty index of the parametrised backend (PostgreSQL: tables dropped first)."""
    opened = []

    def make(name: str = "lexical.db"):
        if request.param == "sqlite":
            return LexicalIndex(tmp_path / name)
        url = request.getfixturevalue("postgres_lexical_url")
        if not opened:
            from sqlalchemy import create_engine, text

            engine = create_engine(url)
            with engine.begin() as conn:
                conn.execute(text("DROP TABLE IF EXISTS lexical_chunks, lexical_schema"))
            engine.dispose()
        lexical = PostgresLexicalIndex(url)
        opened.append(lexical)
        return lexical

    yield make
    for lexical in opened:
        lexical.close()


@pytest.fixture
def index(make_index):
    lexical = make_index()
    lexical.add(
        [
            _chunk("pub", 0, "Annual leave carries over up to 240 hours."),
            _chunk("pub", 1, "Travel vouchers are due within five days."),
        ],
        groups=[],
    )
    lexical.add(
        [_chunk("hr", 0, "Salary bands for annual leave negotiations are secret.")], groups=["hr"]
    )
    lexical.add([_chunk("fin", 0, "Budget codes for annual purchases.")], groups=["finance", "a|b"])
    return lexical


def test_bm25_ranks_the_matching_chunk_first(index):
    hits = index.search("How many hours of annual leave carry over?", 5, AccessScope(None))
    assert hits[0][0] == "pub:0"
    assert hits[0][1] >= hits[-1][1]


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced',
        "leave AND OR NOT",
        "NEAR(leave over)",
        "leave*",
        "-leave",
        "col:leave",
        "(((",
        "'; DROP TABLE chunks; --",
        "^leave",
        "leave + over",
        "ünïcödé leave",
    ],
)
def test_fts_syntax_in_questions_never_raises(index, query):
    hits = index.search(query, 5, AccessScope(None))
    assert isinstance(hits, list)
    assert index.count() == 4


def test_match_expression_quotes_every_term_and_drops_stopwords():
    assert match_expression('How do I "carry" my leave?') == '"carry" OR "leave"'
    assert match_expression("the a of") == '"the" OR "a" OR "of"'  # all stopwords: keep them
    assert match_expression("?!") is None
    assert tsquery_expression('How do I "carry" my leave?') == "'carry' | 'leave'"
    assert tsquery_expression("?!") is None


def test_restricted_chunks_never_reach_outsiders(index):
    outsider = {
        cid for cid, _ in index.search("annual leave salary budget", 10, AccessScope(frozenset()))
    }
    assert outsider == {"pub:0"}
    hr = {
        cid
        for cid, _ in index.search("annual leave salary budget", 10, AccessScope(frozenset({"hr"})))
    }
    assert hr == {"pub:0", "hr:0"}
    admin = {cid for cid, _ in index.search("annual leave salary budget", 10, AccessScope(None))}
    assert admin == {"pub:0", "hr:0", "fin:0"}


def test_set_acl_rewrites_who_may_read_a_document(index):
    """A group change reaches every chunk of the document at once, on both backends."""
    assert index.set_acl("hr", chunk_acl_column(["finance"])) == 1
    hr = AccessScope(frozenset({"hr"}))
    finance = AccessScope(frozenset({"finance"}))
    assert "hr:0" not in {c for c, _ in index.search("annual leave salary budget", 10, hr)}
    assert "hr:0" in {c for c, _ in index.search("annual leave salary budget", 10, finance)}
    assert index.set_acl("absent-document", chunk_acl_column([])) == 0


def test_group_names_with_delimiters_match_exactly(index):
    assert {c for c, _ in index.search("budget", 5, AccessScope(frozenset({"a|b"})))} == {"fin:0"}
    assert index.search("budget", 5, AccessScope(frozenset({"a"}))) == []
    assert index.search("budget", 5, AccessScope(frozenset({"b"}))) == []


def test_delete_document_removes_rows_and_fts_entries(index):
    assert index.delete_document("pub") == 2
    assert index.delete_document("pub") == 0
    assert index.count() == 2 and index.fts_count() == 2
    assert index.search("vouchers", 5, AccessScope(None)) == []


def test_get_returns_display_fields(index):
    got = index.get(["hr:0", "missing:9"])
    assert list(got) == ["hr:0"]
    assert got["hr:0"].title == "Title of hr" and got["hr:0"].text.startswith("Salary")


def test_heading_words_weigh_more_than_body_words(make_index):
    lexical = make_index()
    lexical.add(
        [_chunk("a", 0, "Mentions a voucher once among many other words about travel and time.")]
    )
    lexical.add(
        [
            _chunk(
                "b",
                0,
                "Submit within five days of the trip ending among many other words.",
                section="Voucher",
            )
        ]
    )
    assert [c for c, _ in lexical.search("voucher", 2, AccessScope(None))] == ["b:0", "a:0"]


def test_index_from_another_schema_version_is_a_clear_error(tmp_path):
    import sqlite3

    from ingest.errors import IngestError

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY)")
    with pytest.raises(IngestError, match="schema version 0"):
        LexicalIndex(path).count()
    fresh = LexicalIndex(tmp_path / "new.db")
    assert (
        fresh.count() == 0 and LexicalIndex(tmp_path / "new.db").count() == 0
    )  # reopening is fine


def test_postgres_index_needs_a_postgres_url():
    from ingest.errors import IngestError

    with pytest.raises(IngestError, match="postgresql://"):
        PostgresLexicalIndex("sqlite:///x.db")


def test_a_second_handle_sees_what_the_first_wrote(make_index):
    """Worker and gateway hold separate handles (separate hosts, for PostgreSQL)."""
    writer, reader = make_index("shared.db"), make_index("shared.db")
    writer.add([_chunk("d", 0, "Quarterly inventory counts happen in March.")])
    assert [c for c, _ in reader.search("inventory", 5, AccessScope(None))] == ["d:0"]
    assert reader.document_chunk_ids("d") == ["d:0"]
    with pytest.raises(Exception, match="already indexed"):
        writer.add([_chunk("d", 0, "Quarterly inventory counts happen in March.")])
    assert reader.count() == 1
