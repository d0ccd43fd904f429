"""Sentence spans, content words, numbers and negation cues that attribution compares."""

from __future__ import annotations

from retriever.sentences import (
    content_words,
    is_negated,
    numbers,
    sentence_spans,
    split_sentences,
    strip_markers,
)


def test_sentences_split_at_punctuation_and_line_breaks_not_abbreviations():
    text = (
        "Leave types\nYou can carry over 240 hours, e.g. for travel. It expires in 1.5 years! "
        "Ask the U.S. office; they answer.\n- bullet one\n\n"
    )
    assert split_sentences(text) == [
        "Leave types",
        "You can carry over 240 hours, e.g. for travel.",
        "It expires in 1.5 years!",
        "Ask the U.S. office;",
        "they answer.",
        "- bullet one",
    ]


def test_spans_are_verbatim_slices():
    text = "  First one.   Second one?\nThird"
    assert [text[s.start : s.end] for s in sentence_spans(text)] == [
        "First one.",
        "Second one?",
        "Third",
    ]
    assert split_sentences(" . ; \n") == []


def test_markers_are_removed():
    assert strip_markers("Award leave expires [1]. Vouchers [2, 3] too [1][2].") == (
        "Award leave expires. Vouchers too."
    )


def test_content_words_drop_stop_words_and_stem_lightly():
    assert content_words("The leave expires after it is issued") == {"leave", "expir", "issu"}
    assert content_words("Does not count") == {"count"}


def test_numbers_read_digits_and_number_words():
    assert numbers("two weeks (80 hours), 1,000 dollars, 30%") == {"2", "80", "1000", "30"}
    assert numbers("no figures here") == set()


def test_negation_cues():
    assert is_negated("It does not count against your balance.")
    assert is_negated("You can\u2019t carry it over.")
    assert is_negated("There is no limit.")
    assert not is_negated("You can carry over 240 hours.")
