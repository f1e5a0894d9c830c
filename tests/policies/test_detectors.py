"""The guards' detectors: each kind both ways, the labelled set's targets, and safety.

Safety is what lets a detector run on client text on the event loop: it never
raises, its hits never overlap, redaction leaves none of a hit's text, and no input
(100,000 characters built to make a backtracking engine retry) takes long.
"""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.guards import load, score
from policies import detectors
from policies.detectors import NAMES, Hit, detect, redact

HITS: dict[str, list[tuple[str, str]]] = {
    "email": [
        ("write to john.doe@example.co.uk today", "john.doe@example.co.uk"),
        ('"""Raises unless user@example.com is verified."""', "user@example.com"),
        ("<ann+tag@mail.example.org>", "ann+tag@mail.example.org"),
        ("Kontakt: josé@bücher.de", "josé@bücher.de"),
    ],
    "phone": [
        ("call +44 20 7946 0958", "+44 20 7946 0958"),
        ("office (415) 555-2671.", "(415) 555-2671"),
        ("dial +1-415-555-2671", "+1-415-555-2671"),
        ("Berlin 0049 30 123456", "0049 30 123456"),
        ("ring 020 7946 0958", "020 7946 0958"),
    ],
    "credit_card": [
        ("card 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
        ("card 4111-1111-1111-1111", "4111-1111-1111-1111"),
        ("amex 3782 822463 10005", "3782 822463 10005"),
        ("mc 5555555555554444", "5555555555554444"),
        ("qty 12 4111 1111 1111 1111", "4111 1111 1111 1111"),
    ],
    "iban": [
        ("IBAN DE89 3704 0044 0532 0130 00 EUR", "DE89 3704 0044 0532 0130 00"),
        ("to GB82WEST12345698765432.", "GB82WEST12345698765432"),
    ],
    "ssn": [
        ("SSN: 123-45-6789", "123-45-6789"),
        ("ssn 456 78 9012", "456 78 9012"),
    ],
    "ip_address": [
        ("host 10.0.0.1.", "10.0.0.1"),
        ("at [2001:db8::8a2e:370:7334]:443", "2001:db8::8a2e:370:7334"),
        ("loopback ::1", "::1"),
    ],
    "secret": [
        ("key sk-proj-Abc123def456GHI789jklMNO", "sk-proj-Abc123def456GHI789jklMNO"),
        ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("t=ghp_" + "a1B2" * 9, "ghp_" + "a1B2" * 9),
        (
            "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.SflKxwRJSMeKKF2QT4fw",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.SflKxwRJSMeKKF2QT4fw",
        ),
        (
            "x\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\ny",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
        ),
    ],
}

MISSES: dict[str, list[str]] = {
    "email": ["npm i lodash@4.17.21", "icon@2x.png", "@decorator", "user@localhost"],
    "phone": ["on 2024-01-15 10:30", "order #100234567", "version 1.2.3", "call 555-2671"],
    "credit_card": [
        "4111 1111 1111 1112",
        "ref 1234567890123456",
        "ORD-4111111111111111",
        "order 4782721539517778",
        "4111 1111-1111 1111",
    ],
    "iban": ["DE89 3704 0044 0532 0130 01", "AB12 3456 7890 1234 5678"],
    "ssn": ["000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000"],
    "ip_address": [
        "version 1.2.3",
        "10.0.0.1.2",
        "256.1.1.1",
        "12:30:45",
        "std::vector",
        "ends[::2]",
    ],
    "secret": [
        "sk-this-is-not-a-key-just-a-slug-name",
        "550e8400-e29b-41d4-a716-446655440000",
        "4f3a2b1c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a",
        "eyJub3RhbGciOjF9.eyJ4IjoxfQ.abcdefghijklmnopqrstu",
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
    ],
}


@pytest.mark.parametrize(
    ("kind", "text", "found"), [(k, t, f) for k, cases in HITS.items() for t, f in cases]
)
def test_each_detector_finds_its_kind(kind: str, text: str, found: str) -> None:
    hits = detect(text, [kind])
    assert [text[h.start : h.end] for h in hits] == [found]
    assert hits[0].kind == kind


@pytest.mark.parametrize(("kind", "text"), [(k, t) for k, texts in MISSES.items() for t in texts])
def test_each_detector_ignores_near_misses(kind: str, text: str) -> None:
    assert detect(text, [kind]) == []


def test_redact_names_each_kind() -> None:
    text = "mail a@example.com, card 4111 1111 1111 1111, ip 10.0.0.1"
    assert redact(text, detect(text, NAMES)) == "mail [EMAIL], card [CREDIT_CARD], ip [IP_ADDRESS]"


def test_overlapping_kinds_keep_the_earlier_longer_hit() -> None:
    # The IBAN's digits "0044 0532 0130 00" are also a number with an 00 prefix.
    text = "DE89 3704 0044 0532 0130 00"
    assert detect(text, ["phone", "iban"]) == [Hit("iban", 0, len(text))]
    assert detect(text, ["phone"]) == []


def test_an_unknown_detector_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown detector `emial`"):
        detect("x", ["emial"])


def test_names_are_every_detector() -> None:
    for kind in NAMES:
        assert detect("", [kind]) == []


def test_the_labelled_set_meets_the_targets() -> None:
    cases = load()
    assert len(cases) >= 300
    for s in score(cases):
        assert s.true_pos + s.false_neg >= 20, s.kind
        assert s.precision >= 0.99, (s.kind, s.wrong)
        assert s.recall >= 0.95, (s.kind, s.wrong)


# Text with the characters detectors key on, so hypothesis reaches their checks.
_ALPHABET = st.sampled_from(list("0123456789 -.:+()@_/=\nabcdefxyzABCDEFKIASskeyJpnt"))
_TEXT = st.one_of(st.text(), st.text(_ALPHABET, max_size=200))
_SAMPLES = [t for cases in HITS.values() for t, _ in cases]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_TEXT, st.sampled_from(_SAMPLES)), min_size=1, max_size=4).map("".join))
def test_detect_never_raises_and_hits_never_overlap(text: str) -> None:
    hits = detect(text, NAMES)
    for hit in hits:
        assert 0 <= hit.start < hit.end <= len(text)
    for before, after in itertools.pairwise(hits):
        assert before.end <= after.start
    redacted = redact(text, hits)
    assert redacted.count("[") >= len(hits)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(_SAMPLES), _TEXT, _TEXT)
def test_redact_removes_every_hit(sample: str, before: str, after: str) -> None:
    text = f"{before} {sample} {after}"
    hits = detect(text, NAMES)
    assert hits
    redacted = redact(text, hits)
    assert detect(redacted, NAMES) == []
    for hit in hits:
        assert f"[{hit.kind.upper()}]" in redacted


ADVERSARIAL: dict[str, list[str]] = {
    "email": [
        "a" * 100_000 + "@",
        "a@a" * 33_000,
        "é" * 100_000,
        "a@" * 50_000,
        "a." * 50_000 + "@",
        "a@" + "a-" * 50_000,
    ],
    "phone": [
        "+1 " * 33_333,
        "(415) " * 16_000,
        "(+1) " * 20_000,
        "+1 (1)" * 16_000,
        "0" + " 123" * 25_000,
        "415-" * 25_000,
    ],
    "credit_card": ["4" * 100_000, "4 " * 50_000, "4111 " * 20_000, "4111111111111 " * 7_000],
    "iban": ["DE89" * 25_000, "DE89 " * 20_000, "DE" + "1 " * 50_000],
    "ssn": ["123-45-" * 14_000, "123 " * 25_000, "1" * 100_000],
    "ip_address": ["1." * 50_000, ":" * 100_000, "1:" * 50_000, "a::" * 33_000],
    "secret": [
        "sk-" * 33_000,
        "sk-" + "a" * 100_000,
        "eyJ" + "a." * 50_000,
        "-----BEGIN PRIVATE KEY-----" * 4_000,
        "-----BEGIN PRIVATE KEY-----\n" + "A" * 100_000,
        "xoxb-" + "1-" * 50_000,
    ],
}


@pytest.mark.parametrize(
    ("kind", "text"), [(k, t) for k, texts in ADVERSARIAL.items() for t in texts]
)
def test_detectors_run_in_linear_time_on_hostile_input(kind: str, text: str) -> None:
    start = time.perf_counter()
    detect(text, [kind])
    assert time.perf_counter() - start < 0.5  # typically 1 to 120 ms; headroom for a busy CI


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789 -.+()@:_/ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefxyzsk",
               max_size=80))
def test_each_pattern_is_tried_wherever_it_could_match(text: str) -> None:
    """The candidate scans find every match the patterns alone would."""
    for pattern, starts in ((detectors._CARD, detectors._CARD_START),
                            (detectors._SSN, detectors._SSN_START),
                            (detectors._IPV4, detectors._IPV4_START),
                            (detectors._IBAN, detectors._IBAN_START),
                            (detectors._PHONE, detectors._PHONE_START),
                            (detectors._SECRET, detectors._SECRET_START)):
        spans = [m.span() for m in detectors._finditer(pattern, starts, text)]
        assert spans == [m.span() for m in pattern.finditer(text)], pattern.pattern


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzAKISGHJP -_.@:0123456789\n", max_size=60))
def test_a_text_without_what_every_hit_needs_is_answered_at_once(text: str) -> None:
    """The one-scan answer for texts with no @, digit, colon or secret prefix is right:
    the detectors, one by one, find nothing in them either."""
    if detectors._ANY.search(text) is None:
        assert all(not list(detectors._DETECTORS[kind](text)) for kind in NAMES)
