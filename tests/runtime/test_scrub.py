"""Credentials never leave in an upstream's words: the known secrets and every key shape."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.scrub import PLACEHOLDER, scrub


@pytest.mark.parametrize(("text", "expected"), [
    ("Incorrect API key provided: sk-abc12***************************xyz9. You can find your "
     "API key at https://platform.openai.com/account/api-keys.",
     "Incorrect API key provided: [REDACTED]. You can find your API key at "
     "https://platform.openai.com/account/api-keys."),
    ("Incorrect API key provided: sk-abc...xyz", "Incorrect API key provided: [REDACTED]"),
    ("bad key sk-ant-api03-AbCdEf0123456789-xyz", "bad key [REDACTED]"),
    ("sk-proj-AbCdEfGhIjKlMnOp0123456789", "[REDACTED]"),
    ("key AIzaSyA1234567890abcdefghijklmnopqrstu invalid", "key [REDACTED] invalid"),
    ("gsk_0123456789abcdefABCDEF and xai-0123456789abcdef", "[REDACTED] and [REDACTED]"),
    ("AWS AKIAIOSFODNN7EXAMPLE here", "AWS [REDACTED] here"),
    ("Authorization: Bearer abc.def.ghi123 rejected", "Authorization: Bearer [REDACTED] rejected"),
    ("basic dXNlcjpwYXNzd29yZA==", "basic [REDACTED]"),
    ("Your api key: ****abcd is invalid", "Your api key: [REDACTED] is invalid"),
    ("token: 0123456789abcdef0123456789abcdef", "token: [REDACTED]"),
    ('"api_key": "deadbeefdeadbeefdeadbeef"', '"api_key": "[REDACTED]"'),
    ("?key=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA", "?key=[REDACTED]"),
    ("Invalid token provided: abcdefghijklmnopqrstuvwxyz012345", "Invalid token provided: "
     "[REDACTED]"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "[REDACTED]"),
])
def test_key_shapes_are_redacted(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "the key provided is not valid",
    "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM)",
    "request req_0123456789abcdef0123 failed",
    "use sk-learn for this task",
    "This model's maximum context length is 128000 tokens.",
    "max_tokens is too large: 100000. This model supports at most 16384 completion tokens",
    "**bold** and *italic*",
])
def test_ordinary_words_stay(text: str) -> None:
    assert scrub(text) == text


def test_the_known_secrets_go_whatever_their_shape() -> None:
    assert scrub("Incorrect API key provided: test-key.", ["test-key"]) == \
        f"Incorrect API key provided: {PLACEHOLDER}."
    assert scrub("a and ab and abc", ["abc", "ab"]) == "a and ab and abc"  # too short to look for
    assert scrub("x-secret-value and x-secret-value-2", ["x-secret-value",
                                                         "x-secret-value-2"]) == \
        f"{PLACEHOLDER} and {PLACEHOLDER}"
    assert scrub("nothing", [None, ""]) == "nothing"


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=6,
               max_size=40).filter(lambda s: "[REDACTED]" not in s),
       st.text(max_size=40), st.text(max_size=40))
def test_a_known_secret_never_survives(secret: str, before: str, after: str) -> None:
    assert secret not in scrub(before + secret + after, [secret])
