"""Chunks follow sections and pages, respect size and overlap, and carry stable ids."""

from __future__ import annotations

from ingest.chunking import chunk_elements, make_chunk_id
from ingest.parse import ParsedElement


def _el(text, section=None, page=None, heading=False):
    return ParsedElement(text=text, page=page, section=section, is_heading=heading)


def _sentences(prefix: str, n: int) -> list[str]:
    return [f"{prefix} sentence number {i} says something about the policy." for i in range(n)]


def test_chunks_never_mix_sections_when_sections_are_large():
    a = " ".join(_sentences("Alpha", 8))
    b = " ".join(_sentences("Beta", 8))
    elements = [
        _el("Alpha", "Alpha", heading=True),
        _el(a, "Alpha"),
        _el("Beta", "Beta", heading=True),
        _el(b, "Beta"),
    ]
    chunks = chunk_elements(
        elements, document_id="doc", title="T", chunk_size=400, chunk_overlap=50
    )
    for chunk in chunks:
        assert ("Alpha" in chunk.text) != ("Beta" in chunk.text)
        assert chunk.section == ("Alpha" if "Alpha" in chunk.text else "Beta")


def test_pdf_chunks_keep_one_page_each():
    elements = [_el(s, page=1) for s in _sentences("One", 5)] + [
        _el(s, page=2) for s in _sentences("Two", 5)
    ]
    chunks = chunk_elements(
        elements, document_id="d.pdf", title="T", chunk_size=2000, chunk_overlap=100
    )
    assert [c.page for c in chunks] == [1, 2]
    assert "One" in chunks[0].text and "Two" not in chunks[0].text


def test_sizes_and_overlap():
    text = " ".join(_sentences("Gamma", 60))
    chunks = chunk_elements(
        [_el(text, "S")], document_id="d", title="T", chunk_size=300, chunk_overlap=80
    )
    assert len(chunks) > 5
    assert all(len(c.text) <= 300 for c in chunks)
    # neighbours share text (the overlap), so a fact cut by a boundary is whole in one of them
    shared = [
        a.text[-40:] in b.text or b.text[:40] in a.text
        for a, b in zip(chunks, chunks[1:], strict=False)
    ]
    assert sum(shared) >= len(shared) - 1


def test_ids_ordinals_and_metadata():
    elements = [_el(s, "S", page=None) for s in _sentences("Delta", 30)]
    chunks = chunk_elements(
        elements, document_id="hr/leave.md", title="Leave", chunk_size=300, chunk_overlap=30
    )
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert [c.chunk_id for c in chunks] == [
        make_chunk_id("hr/leave.md", i) for i in range(len(chunks))
    ]
    assert chunks[3].chunk_id == "hr/leave.md:3"
    assert {c.title for c in chunks} == {"Leave"} and {c.document_id for c in chunks} == {
        "hr/leave.md"
    }


def test_small_sections_merge_with_their_heading_kept_in_text():
    elements = [
        _el("Intro", "Intro", heading=True),
        _el("Short intro.", "Intro"),
        _el("Award", "Award", heading=True),
        _el("Award leave expires after one year.", "Award"),
    ]
    chunks = chunk_elements(
        elements, document_id="d", title="T", chunk_size=1000, chunk_overlap=100
    )
    assert len(chunks) == 1
    assert chunks[0].section == "Intro"
    assert "Award\n\nAward leave expires" in chunks[0].text


def test_index_text_prefixes_title_and_section_but_text_stays_clean():
    chunks = chunk_elements(
        [_el("Award leave expires after one year.", "Leave > Award")],
        document_id="d",
        title="Handbook",
        chunk_size=500,
        chunk_overlap=50,
    )
    assert chunks[0].text == "Award leave expires after one year."
    assert chunks[0].index_text.startswith("Handbook > Leave > Award\n")


def test_headings_only_document_gives_no_chunks():
    assert (
        chunk_elements([_el("Heading", "Heading", heading=True)], document_id="d", title="T") == []
    )


def test_evidence_straddling_a_chunk_boundary_is_whole_in_a_neighbour():
    """A two-sentence passage that a boundary cuts in half is still retrievable whole: the
    overlap repeats the sentence before the boundary at the start of the next chunk."""
    from ingest.chunking import ChunkingOptions

    options = ChunkingOptions()
    sentences = [
        f"Rule {i}: teammates in office {i} may claim {i * 7} dollars for desk item {i}."
        for i in range(60)
    ]
    chunks = chunk_elements(
        [_el(" ".join(sentences), "Claims")], document_id="doc", title="T", options=options
    )
    assert len(chunks) >= 3
    pairs = [f"{a} {b}" for a, b in zip(sentences, sentences[1:], strict=False)]
    straddling = [
        p for p in pairs if any(p.split(": ", 1)[0] in c.text and p not in c.text for c in chunks)
    ]
    assert straddling  # the text really is cut inside some pairs
    for pair in pairs:
        assert any(pair in c.text for c in chunks), pair


def test_options_without_heading_path_leave_chunks_bare():
    from ingest.chunking import ChunkingOptions

    chunks = chunk_elements(
        [_el("Some policy text.", "Leave > Annual")],
        document_id="doc",
        title="Handbook",
        options=ChunkingOptions(heading_path=False),
    )
    assert chunks[0].index_text == "Some policy text."
    assert chunks[0].section is None
