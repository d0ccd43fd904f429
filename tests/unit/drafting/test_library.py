"""The clause library: clauses by kind and heading, under the caller's access scope, in the query."""

from __future__ import annotations

from drafting.library import ClauseLibrary, classify, split_clauses, stitch
from ingest.stores.acl import AccessScope
from tests.unit.drafting.library_fixtures import RESTRICTED_CLAUSE, build_index


def test_stitch_drops_the_overlap_of_consecutive_chunks():
    text = "Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu."
    assert stitch(text[:40], text[12:]) == text
    assert (
        stitch("First paragraph.", "Unrelated second.") == "First paragraph.\n\nUnrelated second."
    )


def test_kinds_come_from_headings():
    assert classify("Non-Solicitation") == "non_solicit"
    assert classify("add a non-solicitation clause, 12 months") == "non_solicit"
    assert classify("Governing Law") == "governing_law"
    assert classify("Miscellaneous") is None


def test_a_user_without_access_never_gets_the_restricted_contracts_clauses(tmp_path):
    build_index(tmp_path / "lexical.db")
    library = ClauseLibrary(tmp_path / "lexical.db")
    query = "add a non-solicitation clause, 12 months"

    for scope in (AccessScope.for_groups(["hr"]), AccessScope.for_groups([])):
        assert library.search(query, scope) == []
        assert library.get("doc-legal:1", scope) is None

    for scope in (AccessScope.for_groups(["legal"]), AccessScope.everything()):
        found = library.search(query, scope)
        assert [c.text for c in found] == [RESTRICTED_CLAUSE]  # whole clause, stitched
        assert found[0].kind == "non_solicit" and found[0].heading == "Non-Solicitation"
        assert found[0].document_title == "Legal Contractor Agreement"
        assert library.get(found[0].clause_id, scope) == found[0]


def test_public_clauses_are_found_by_anyone(tmp_path):
    build_index(tmp_path / "lexical.db")
    found = ClauseLibrary(tmp_path / "lexical.db").search(
        "governing law clause", AccessScope.for_groups([])
    )
    assert [c.heading for c in found] == ["Governing Law"]


def test_a_missing_index_is_an_empty_library(tmp_path):
    assert ClauseLibrary(tmp_path / "none.db").search("non-solicit", AccessScope.everything()) == []


def test_a_clause_under_a_heading_line_takes_its_kind():
    sections = [
        (
            None,
            "Limitation of Liability\n\nLiability Caps. Each party's liability is capped at fees paid "
            "in the prior 12 months.\n\nInsurance\n\nDuring the term each party keeps insurance.\n\n"
            "Governing Law: [Fill in state]\n\nJurisdiction: [city]",
        )
    ]
    clauses = split_clauses("d", "Agreement", sections)
    assert [(c.heading, c.kind) for c in clauses] == [
        ("Liability Caps", "limitation_of_liability"),
        ("Insurance", "insurance"),
    ]
