"""The guards' mechanism: a whole text judged, and the same text judged as it streams.

The reference for a stream is the whole text: however an answer is cut into
chunks, what a client reads once the stream is over must be what `judge` makes
of the whole answer, and no piece of a hit may have gone before it was judged.
"""

from __future__ import annotations

import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.guarding import WINDOW, Check, Holdback, Refused, judge

CARD = "4111 1111 1111 1111"
REDACT = Check("pii", ("email", "credit_card", "secret"), None, "redact", False)
DENY_CARDS = Check("cards", ("credit_card",), None, "deny", False)
WORDS = st.sampled_from(["the", "order", "is", "ready", "call", "me", "at", CARD,
                         "4242-4242-4242-4242", "bob@example.com", "2024-05-01", "v1.2.3",
                         "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z", "\n", "12345678"])


def streamed(text: str, cuts: list[int], checks: list[Check]) -> tuple[str, Holdback]:
    holdback = Holdback(checks)
    out, start = [], 0
    for cut in [*sorted(set(cuts)), len(text)]:
        if start < cut <= len(text):
            out.append(holdback.feed(text[start:cut]))
            start = cut
    out.append(holdback.close())
    return "".join(out), holdback


def test_a_whole_text_is_redacted_where_it_hits_and_kept_elsewhere() -> None:
    verdict = judge(f"mail bob@example.com, card {CARD}, order 12345678", [REDACT])
    assert verdict.text == "mail [EMAIL], card [CREDIT_CARD], order 12345678"
    assert verdict.refused is None
    assert [f.kind for f in verdict.found] == ["email", "credit_card"]


def test_a_deny_pattern_refuses_whatever_the_action_and_shadow_only_watches() -> None:
    pattern = Check("words", (), re2.compile(r"(?:\d{5})|(?:(?i)internal only)"), "flag", False)
    refused = judge("this is INTERNAL ONLY", [pattern]).refused
    assert refused is not None and (refused.guard, refused.kind) == ("words", "pattern")
    watching = Check("cards", ("credit_card",), None, "redact", True)
    verdict = judge(f"card {CARD}", [watching])
    assert verdict.text == f"card {CARD}" and verdict.found[0].shadow


@settings(max_examples=300, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=60), st.lists(st.integers(0, 2000), max_size=80))
def test_a_stream_reads_as_the_whole_text_however_it_is_cut(words: list[str],
                                                            cuts: list[int]) -> None:
    text = " ".join(words)
    out, holdback = streamed(text, cuts, [REDACT])
    whole = judge(text, [REDACT])
    assert out == whole.text
    assert sorted(f[:4] for f in holdback.found) == sorted(f[:4] for f in whole.found)


def test_a_card_split_over_four_chunks_never_leaves_in_part() -> None:
    text = f"Your card {CARD} is on file."
    holdback, released = Holdback([REDACT]), []
    for i in range(0, len(text), 4):
        released.append(holdback.feed(text[i:i + 4]))
        assert not any(digit in "".join(released) for digit in "4111")
    assert "".join(released) + holdback.close() == "Your card [CREDIT_CARD] is on file."


def test_text_is_released_a_window_behind_not_held_to_the_end() -> None:
    text = "word " * 200
    holdback, released = Holdback([REDACT]), 0
    for i in range(0, len(text), 5):
        released += len(holdback.feed(text[i:i + 5]))
        assert i + 5 - released <= WINDOW + 64  # the window, and the step gathered past it
    assert released > 0


def test_a_refusal_mid_stream_is_raised_before_the_hit_is_released() -> None:
    text = "a" * 200 + f" then {CARD} and more " + "b " * 100
    holdback, released = Holdback([DENY_CARDS]), []
    try:
        for i in range(0, len(text), 3):
            released.append(holdback.feed(text[i:i + 3]))
    except Refused as refusal:
        assert refusal.finding.kind == "credit_card"
    else:
        raise AssertionError("the card went by")
    assert "4111" not in "".join(released)


def test_a_run_without_spaces_is_held_whole_only_up_to_its_bound() -> None:
    holdback = Holdback([REDACT])
    for _ in range(50_000):
        holdback.feed("AAAA")
    assert len(holdback.close()) <= 8192 + 64
