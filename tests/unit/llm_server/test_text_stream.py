"""Stop strings never leak to the client, not even their first characters."""

from __future__ import annotations

import pytest

from services.llm_server.backends.text_stream import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out.append(text)
        if hit:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


@pytest.mark.parametrize(
    "pieces", [["Hello END world"], ["Hel", "lo E", "N", "D wor", "ld"], list("Hello END world")]
)
def test_text_is_cut_before_the_stop_string_however_it_is_split(pieces):
    assert run(["END"], pieces) == ("Hello ", True)


def test_the_earliest_of_several_stop_strings_wins():
    assert run(["world", "lo"], ["Hello world"]) == ("Hel", True)


def test_held_back_prefix_is_released_when_it_turns_out_not_to_be_a_stop():
    matcher = StopMatcher(["END"])
    assert matcher.feed("abc E") == ("abc ", False)  # "E" might start "END"
    assert matcher.feed("x") == ("Ex", False)
    assert run(["END"], ["the E", "N"]) == ("the EN", False)  # flushed at the end


def test_no_stop_strings_passes_text_through_unchanged():
    matcher = StopMatcher([])
    assert matcher.feed("abc") == ("abc", False)
    assert StopMatcher([""]).feed("abc") == ("abc", False)
