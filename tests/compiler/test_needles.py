"""The needles a deny pattern can't match without: never one a real match lacks.

The reference is RE2 itself: for random patterns in the syntax the needles read,
and random texts, every text RE2 finds a match in holds one of the needles.
"""

from __future__ import annotations

import re2
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from compiler.needles import needles

ALPHABET = "abAB ßẞſsSKkKσςΣ.-"
ATOMS = st.sampled_from(["a", "b", "A", "ß", "ẞ", "ſ", "s", "K", "k", "K", "σ", "Σ", "ς", " ",
                         r"\.", r"\-", r"\s", r"\d", r"\w", r"\S", r"\b", r"\B", ".", "^",
                         "$", "[ab]", "[^a]", "[]a]", r"[\s.]", "(ab)", "(?:a|bk)",
                         "(?:(s)k)"])
QUANTIFIERS = st.sampled_from(["", "", "", "*", "+", "?", "{1,2}", "{2}", "+?", "*?"])
BRANCHES = st.lists(st.tuples(ATOMS, QUANTIFIERS).map("".join), min_size=1, max_size=6).map(
    "".join)
PATTERNS = st.tuples(st.sampled_from(["", "(?i)"]),
                     st.lists(BRANCHES, min_size=1, max_size=3).map("|".join)).map("".join)


@settings(max_examples=600, deadline=None)
@given(PATTERNS, st.lists(st.text(alphabet=ALPHABET, max_size=12), min_size=1, max_size=8))
def test_a_text_rre2_matches_always_holds_a_needle(pattern: str, texts: list[str]) -> None:
    try:
        compiled = re2.compile(pattern)
    except re2.error:
        assume(False)
    found = needles([pattern])
    for text in texts:
        if found is not None and compiled.search(text) is not None:
            assert any(needle in text.casefold() for needle in found), (pattern, text, found)


def test_the_words_of_a_pattern_are_its_needles() -> None:
    assert needles([r"(?i)project\s+bluebird", r"(?i)\bdrop\s+table\b"]) == ("bluebird",
                                                                             "table")
    assert needles(["BEGIN RSA PRIVATE KEY"]) == ("begin rsa private key",)
    assert needles(["invoice|receipt"]) == ("invoice", "receipt")


def test_what_is_not_read_or_has_no_word_is_always_searched() -> None:
    for pattern in [r"\d{16}", "[[:alpha:]]x", r"\Qsecret\E", "(?P<n>x)", "(?=x)y", "",
                    "x|", r"\x41bc", "(a+)+$", "x{2,", r"(?s)secret"]:
        assert needles([pattern]) is None, pattern
    assert needles(["secret", r"\d+"]) is None  # one pattern without: the guard searches
