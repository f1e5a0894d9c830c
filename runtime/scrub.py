"""Credentials taken out of text that came from an upstream, before gwc passes it on or logs it.

Providers echo what they were sent ("Incorrect API key provided: sk-abc1****wxyz"),
and an error message travels far: to the client, to the access log, to
whoever reads either. `scrub` replaces the secrets it is given (the adapter's
own key and header values) and anything shaped like a credential:

- keys with a known prefix: `sk-...` (OpenAI, Anthropic's `sk-ant-...`,
  DeepSeek, ...), `AIza...` (Google), `gsk_`, `xai-`, `hf_`, `pplx-`,
  `nvapi-`, `ghp_`/`github_pat_`, `AKIA...` (AWS), JSON web tokens;
- what follows `Bearer` or `Basic`;
- a long token right after a word like key, token or secret
  (`api_key=...`, `"token": "..."`, `key provided: ...`);
- a masked echo, a run of key characters with four or more `*` in it.

Each becomes `[REDACTED]`; the words around it stay, so the message still
says what went wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

PLACEHOLDER = "[REDACTED]"
MIN_SECRET = 6  # a shorter "secret" would blank out ordinary words

_CHARS = r"A-Za-z0-9_\-"
_SHAPES = re.compile(
    "|".join([
        # sk-..., with a masked or elided middle ("sk-abc...xyz", "sk-ab**cd")
        rf"\bsk-(?=[{_CHARS}*.]{{6}})(?:[{_CHARS}*]|\.+(?=[{_CHARS}*]))+",
        rf"\bAIza[{_CHARS}]{{12,}}",
        rf"\b(?:gsk|hf|ghp|gho|ghu|ghs|github_pat|r8)_[{_CHARS}]{{10,}}",
        rf"\b(?:xai|pplx|nvapi)-[{_CHARS}]{{10,}}",
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        rf"\beyJ[{_CHARS}]{{8,}}\.[{_CHARS}]{{8,}}(?:\.[{_CHARS}]*)?",  # a JWT
        rf"[{_CHARS}.]*\*{{4,}}[{_CHARS}.*]*",  # a masked echo of some key
    ]))
_SCHEMES = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{6,}")
_AFTER_WORD = re.compile(
    r"(?i)((?:api[_\- ]?)?(?:key|token|secret|password|credential|signature)s?"
    r"(?:\s+provided)?[\"']?\s*[:=]?\s*[\"']?)"
    r"([A-Za-z0-9+/_\-.=]{16,})")


_HEX = frozenset("0123456789abcdefABCDEF")


def _looks_random(token: str) -> bool:
    """A long word is a token when it mixes digits in, is all hex, or is too long for a word."""
    return any(c.isdigit() for c in token) or len(token) >= 32 or set(token) <= _HEX


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with the `secrets` and anything shaped like a credential as `[REDACTED]`."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET},
                         key=len, reverse=True):  # a key before any key it contains
        text = text.replace(secret, PLACEHOLDER)
    text = _SHAPES.sub(PLACEHOLDER, text)
    text = _SCHEMES.sub(lambda m: f"{m[1]}{m[2]}{PLACEHOLDER}", text)
    return _AFTER_WORD.sub(
        lambda m: m[1] + PLACEHOLDER if _looks_random(m[2]) else m[0], text)
