"""The guards' built-in detectors: personal data and credentials found in free text.

A guard names detectors (`email`, `phone`, `credit_card`, `iban`, `ssn`,
`ip_address`, `secret`); `detect` returns where each kind occurs and `redact`
replaces every hit with its kind in brackets. Both run on every request and answer
a guard has, so they must be precise (a random 16-digit number, an order id, a
version string, a UUID or a git SHA is not a hit) and must never stall on hostile
input: a client controls the text.

Every detector is a candidate pattern plus a check in Python. The patterns use only
bounded quantifiers over character classes, and every repeated group begins with a
character its neighbour can't end with, so Python's backtracking engine does a
bounded amount of work per start position: linear in the text. The checks are
where precision comes from: Luhn and issuer prefixes for cards, the mod-97
checksum and each country's length for IBANs, the stdlib `ipaddress` for
addresses, a JSON header with `alg` for JWTs.

What counts, decided once here so the bench and the guards agree:

- an email is counted wherever it appears, code and docstrings included
  (`user@example.com` in a docstring still reaches the provider); a name whose
  "top-level domain" is a file extension (`icon@2x.png`) is not an email;
- a phone number needs an international prefix (`+44 ...`, `0049 ...`), the North
  American shape (`(415) 555-2671`, `415-555-2671`), or a national number with a
  trunk `0` and separators (`020 7946 0958`); a bare run of digits is not a phone,
  and neither is a number that is a valid card or IBAN;
- a card number right after a word naming a reference ("order", "invoice",
  "tracking", "id", ...) is that reference, even when it passes Luhn;
- an SSN is written with dashes or spaces (`123-45-6789`); nine bare digits are not;
- an IBAN is written in capitals, grouped by spaces or not;
- a four-part dotted number that is a valid IPv4 address is an address, even if
  someone meant it as a version; a slice in code (`xs[1::2]`) is not an IPv6 one.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

NAMES: tuple[str, ...] = (
    "email",
    "phone",
    "credit_card",
    "iban",
    "ssn",
    "ip_address",
    "secret",
)


class Hit(NamedTuple):
    """One detected span: `text[start:end]` is of kind `kind`."""

    kind: str
    start: int
    end: int


def _search(pattern: re.Pattern[str], starts: re.Pattern[str], text: str, pos: int = 0
            ) -> re.Match[str] | None:
    """`pattern.search(text, pos)`, tried only where `starts` finds a place a match could
    begin. The detectors' patterns open with a lookbehind, which makes the regex engine
    try every position in turn; each `starts` opens with a character class, which it
    skips to at C speed, so prose with few candidates costs a fraction of the time.
    `starts` must match at every position where `pattern` can: a superset, which a
    property test holds them to."""
    while (candidate := starts.search(text, pos)) is not None:
        found = pattern.match(text, candidate.start())
        if found is not None:
            return found
        pos = candidate.start() + 1
    return None


def _finditer(pattern: re.Pattern[str], starts: re.Pattern[str], text: str
              ) -> Iterator[re.Match[str]]:
    """`pattern.finditer(text)` by way of `_search` (none of the patterns matches empty)."""
    pos = 0
    while (found := _search(pattern, starts, text, pos)) is not None:
        yield found
        pos = found.end()


# Where each pattern's match can begin: its first character, not preceded by what its
# lookbehind refuses (the lookbehind reads the two characters ending at the first), and
# for the fixed shapes followed by what the pattern needs next, checked in C too.
_CARD_START = re.compile(r"\d(?<![\w-]\d)(?=(?:[ -]?\d){12})")
_SSN_START = re.compile(r"\d(?<![\w-]\d)(?=\d\d[- ]\d\d[- ]\d{4})")
_IPV4_START = re.compile(r"\d(?<![\w.]\d)(?=\d{0,2}\.\d{1,3}\.\d{1,3}\.\d)")
_IBAN_START = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])")
_PHONE_START = re.compile(r"[+(\d](?<![\w+.-][+(\d])")
_SECRET_START = re.compile(r"sk-|AKIA|ASIA|gh[pousr]_|github_pat_|xox[abprs]-|eyJ")


# --- email -----------------------------------------------------------------

# Letters are Unicode (`josé@bücher.de`); `[^\W_]` is a letter or digit.
_EMAIL = re.compile(
    r"(?<![\w.%+-])"
    r"\w[\w.%+-]{0,63}"
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,8}"
    r"([^\W\d_]{2,24})(?![\w-])"
)

# Names like `icon@2x.png` or `lodash@4.17.js` have an email's shape; no real
# top-level domain in common use is one of these file extensions.
# fmt: off
_FILE_EXTENSIONS = frozenset([
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tif", "tiff", "pdf", "css", "js",
    "mjs", "cjs", "ts", "tsx", "jsx", "json", "yaml", "yml", "toml", "ini", "cfg", "txt", "md",
    "rst", "html", "htm", "xml", "lock", "zip", "gz", "tgz", "tar", "whl", "py", "pyc", "rb",
    "go", "rs", "java", "kt", "swift", "c", "h", "cpp", "hpp", "o", "so", "dll", "exe", "bin",
    "log", "csv", "tsv", "wasm", "map",
])
# fmt: on


def _emails(text: str) -> Iterator[tuple[int, int]]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        local = m.group(0).split("@", 1)[0]
        if ".." in local or local.endswith("."):
            continue
        if m.group(1).lower() in _FILE_EXTENSIONS:
            continue
        yield m.start(), m.end()


# --- credit cards ----------------------------------------------------------

_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _issuer(digits: str) -> bool:
    """Whether a known card network issues numbers with this prefix and length."""
    n = len(digits)
    p2, p4 = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if p4 == 6011 or p2 == 65 or 644 <= int(digits[:3]) <= 649:  # Discover
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if p2 == 36 or 300 <= int(digits[:3]) <= 305 or p2 in (38, 39):  # Diners Club
        return 14 <= n <= 19
    if p2 == 62:  # UnionPay
        return 16 <= n <= 19
    if p4 in _MAESTRO:
        return 12 <= n <= 19
    return False


_MAESTRO = frozenset((5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763))

# A number right after one of these words is a reference, not a card, even when it
# happens to pass Luhn (one in ten random numbers does): "order 4782721539517778".
_REFERENCE = re.compile(
    r"\b(?:order|invoice|ref|reference|tracking|ticket|sku|serial|shipment|transaction"
    r"|txn|id)[\s:#=-]{0,3}$",
    re.IGNORECASE,
)


def _is_reference(text: str, start: int) -> bool:
    """Whether the word just before `start` names the number a reference."""
    return _REFERENCE.search(text, max(0, start - 16), start) is not None


def _card_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and _issuer(digits) and _luhn(digits)


_DIGITS = re.compile(r"\d+")


def _cards(text: str) -> Iterator[tuple[int, int]]:
    pos = 0
    while (m := _search(_CARD, _CARD_START, text, pos)) is not None:
        raw, start, pos = m.group(0), m.start(), m.end()
        if _is_reference(text, start):
            continue
        if raw.isdigit():
            if _card_ok(raw):
                yield start, m.end()
            continue
        groups = [(g.start(), g.end()) for g in _DIGITS.finditer(raw)]
        span = _leading_card(raw, groups)
        if span is not None:
            yield start + span[0], start + span[1]
        # A card may start at a later group ("qty 12 4111 1111 1111 1111") and run past
        # the 19 digits the pattern took: look again from the next group that can
        # start one. Each look starts a group further on, so the work stays linear.
        done = span[1] if span is not None else groups[0][1]
        for a, b in groups:
            if a >= done and (b - a == 4 or b - a >= 13):
                pos = start + a
                break


def _leading_card(raw: str, groups: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The longest card made of the candidate's first groups, if there is one.

    A long group is a card alone; otherwise the run starts with a group of four, as
    every network prints its numbers, and keeps one separator ("4111 1111-1111
    1111" is no card).
    """
    first = groups[0][1] - groups[0][0]
    if first >= 13:
        return groups[0] if _card_ok(raw[groups[0][0] : groups[0][1]]) else None
    if first != 4:
        return None
    sep = raw[groups[0][1]]
    count = [0]
    for a, b in groups:
        count.append(count[-1] + b - a)
    for j in range(len(groups), 1, -1):
        if not 13 <= count[j] <= 19:
            continue
        if any(raw[b] != sep for _, b in groups[: j - 1]):
            continue
        if _card_ok("".join(raw[a:b] for a, b in groups[:j])):
            return groups[0][0], groups[j - 1][1]
    return None


# --- IBAN ------------------------------------------------------------------

# ISO 13616 lengths by country (the SWIFT registry), so a checksum is run on exactly
# the IBAN and not on a word that happens to follow it.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")


def _mod97(iban: str) -> bool:
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _finditer(_IBAN, _IBAN_START, text):
        raw = m.group(0)
        length = _IBAN_LENGTHS.get(raw[:2])
        if length is None:
            continue
        # Walk `length` alphanumerics; the IBAN must end there, not mid-word.
        count, end = 0, 0
        for end, ch in enumerate(raw, 1):  # noqa: B007 - `end` is used after the loop
            if ch != " ":
                count += 1
                if count == length:
                    break
        if count < length:
            continue
        stop = m.start() + end
        if stop < len(text) and text[stop].isalnum():
            continue
        if _mod97(raw[:end].replace(" ", "")):
            yield m.start(), stop


# --- phone -----------------------------------------------------------------

_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    # international: + or 00, a country code, groups split by one separator
    # ("(0)" is the trunk digit some countries print: +44 (0)20 7946 0958)
    r"(?:(?:\+|00)[1-9]\d{0,13}|\(\+[1-9]\d{0,3}\))"
    r"(?:[ .-]?\(\d{1,4}\)\s?\d{1,10}|[ .-]\d{1,10}){0,7}"
    # North American: (415) 555-2671, 415-555-2671, 1-800-555-0199
    r"|(?:1[ .-])?\(\s?[2-9]\d{2}\s?\)\s?[2-9]\d{2}[ .-]\d{4}"
    r"|(?:1([ .-]))?[2-9]\d{2}([ .-])[2-9]\d{2}\2\d{4}"
    # national with a trunk 0: 020 7946 0958, (030) 123 4567
    r"|0[1-9]\d{1,3}([ -])\d{3,4}\3\d{3,4}"
    r"|\(0\d{1,4}\)\s?\d{3,4}[ -]?\d{3,4}"
    r")(?![\w-]|[.]\d)"
)


def _phones(text: str) -> Iterator[tuple[int, int]]:
    taken: list[tuple[int, int]] | None = None
    ends: list[int] = []
    for m in _finditer(_PHONE, _PHONE_START, text):
        if taken is None:  # computed once, only when a phone candidate exists
            taken = _merged([*_cards(text), *_ibans(text)])
            ends = [b for _, b in taken]
        raw = m.group(0)
        i = bisect.bisect_right(ends, m.start())  # the first taken span ending after it
        if i < len(taken) and taken[i][0] < m.end():
            if taken[i][0] <= m.start():  # inside a card or an IBAN
                continue
            # A number the pattern ran on into a card: the phone stops before it.
            raw = raw[: taken[i][0] - m.start()].rstrip(" .-(")
        digits = sum(ch.isdigit() for ch in raw)
        if raw.startswith(("+", "(+")):
            raw, digits = _trimmed(raw, digits, 15)
            if not 8 <= digits <= 15:
                continue
        elif raw.startswith("00"):
            raw, digits = _trimmed(raw, digits, 17)
            if not 10 <= digits - 2 <= 15:
                continue
        elif not 10 <= digits <= 12 or len(raw) < len(m.group(0)):
            continue  # the fixed national shapes are whole or nothing
        yield m.start(), m.start() + len(raw)


def _trimmed(raw: str, digits: int, most: int) -> tuple[str, int]:
    """An international number without the trailing groups that make it too long.

    The pattern takes every group it can, so "+44 20 7946 0958 1234 5678" ran
    on into the numbers after it; E.164 allows 15 digits, so the last groups go.
    """
    while digits > most:
        cut = max(raw.rfind(" "), raw.rfind("."), raw.rfind("-"))
        if cut <= 0:
            break
        digits -= sum(ch.isdigit() for ch in raw[cut:])
        raw = raw[:cut]
    return raw, digits


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans joined where they overlap: disjoint and sorted, so a bisect finds a clash."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a < out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


# --- US social security numbers -------------------------------------------

_SSN = re.compile(
    r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-]|[.]\d)"
)


def _ssns(text: str) -> Iterator[tuple[int, int]]:
    for m in _finditer(_SSN, _SSN_START, text):
        yield m.start(), m.end()


# --- IP addresses ----------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\w)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f:.]{2,45}(?![\w:])")


def _subscript(text: str, start: int) -> bool:
    """Whether `start` opens a slice like `ends[::2]` or `x[1::2]`, not `[::1]:443`."""
    return (
        start >= 2
        and text[start - 1] == "["
        and (text[start - 2].isalnum() or text[start - 2] in "_])")
    )


def _ips(text: str) -> Iterator[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    if "." in text:
        for m in _finditer(_IPV4, _IPV4_START, text):
            try:
                ipaddress.IPv4Address(m.group(0))
            except ValueError:
                continue
            found.append((m.start(), m.end()))
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            raw = m.group(0).rstrip(".")
            if _subscript(text, m.start()):
                continue
            if raw.count(":") < 2 or not any(ch not in ":." for ch in raw):
                continue
            try:
                ipaddress.IPv6Address(raw)
            except ValueError:
                continue
            found.append((m.start(), m.start() + len(raw)))
    yield from sorted(found)


# --- secrets ---------------------------------------------------------------

_SECRET = re.compile(
    r"(?<![\w-])(?:"
    r"(?P<sk>sk-(?:ant-|proj-|svcacct-|admin-)?(?P<skbody>[A-Za-z0-9_-]{20,500}))"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,251}"
    r"|github_pat_[A-Za-z0-9_]{50,250}"
    r"|xox[abprs]-(?:[0-9]{1,20}-){1,4}[A-Za-z0-9]{16,64}"
    r"|(?P<jwt>eyJ[A-Za-z0-9_-]{4,2000}\.[A-Za-z0-9_-]{2,8000}\.[A-Za-z0-9_-]{16,2000})"
    r")(?![\w-])"
)

_PEM = re.compile(r"-----(BEGIN|END) ((?:[A-Z0-9]{1,12} ){0,3})PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=:, \t\r\n-]*")


def _jwt_header(token: str) -> bool:
    """Whether the first part decodes to a JSON object with an `alg` (a JWS header)."""
    head = token.split(".", 1)[0]
    try:
        data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(data, dict) and isinstance(data.get("alg"), str)


def _random_looking(body: str) -> bool:
    """Generated keys mix cases and digits; a slug like `sk-learn-...` doesn't."""
    return (
        any(c.isdigit() for c in body)
        and any(c.isupper() for c in body)
        and any(c.islower() for c in body)
    )


def _secrets(text: str) -> Iterator[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for m in _finditer(_SECRET, _SECRET_START, text):
        if m.group("sk") and not _random_looking(m.group("skbody")):
            continue
        if m.group("jwt") and not _jwt_header(m.group("jwt")):
            continue
        found.append((m.start(), m.end()))
    if "PRIVATE KEY" in text:
        found.extend(_pem_blocks(text))
    yield from sorted(found)


def _pem_blocks(text: str) -> Iterator[tuple[int, int]]:
    """Each BEGIN with the next matching END; a block cut short runs to its body's end."""
    begin: re.Match[str] | None = None
    for m in _PEM.finditer(text):
        if m.group(1) == "BEGIN":
            if begin is not None:
                yield _unterminated(text, begin, m.start())
            begin = m
        elif begin is not None and m.group(2) == begin.group(2):
            yield begin.start(), m.end()
            begin = None
    if begin is not None:
        yield _unterminated(text, begin, len(text))


def _unterminated(text: str, begin: re.Match[str], limit: int) -> tuple[int, int]:
    """The block's header and body up to `limit` (the next header): linear overall."""
    body = _PEM_BODY.match(text, begin.end(), min(limit, begin.end() + 20000))
    end = body.end() if body else begin.end()
    return begin.start(), end


# --- the API ---------------------------------------------------------------

_NUMBERS = frozenset(("phone", "credit_card", "iban", "ssn"))  # none is written without a digit
_DIGIT = re.compile(r"\d")
# What no hit of any kind is without: an email's @, a digit (numbers, IPv4), an IPv6
# colon, a secret's prefix or a PEM header. A text with none of them, as most short
# prompts are, is answered by one scan.
_ANY = re.compile(r"[@\d:]|sk-|AKIA|ASIA|gh[pousr]_|github_pat_|xox[abprs]-|eyJ|PRIVATE KEY")

_DETECTORS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "email": _emails,
    "phone": _phones,
    "credit_card": _cards,
    "iban": _ibans,
    "ssn": _ssns,
    "ip_address": _ips,
    "secret": _secrets,
}


def detect(text: str, kinds: Iterable[str]) -> list[Hit]:
    """The hits of the named detectors in `text`: in order and never overlapping.

    Where two kinds claim overlapping text (an IBAN's digits can look like a phone
    number) the earlier, then the longer, hit wins, so redaction never has to
    splice one bracket into another. An unknown kind is a `ValueError`: the
    compiler checks names, so one reaching here is a bug, not input.
    """
    if _ANY.search(text) is None:
        for kind in kinds:
            if kind not in _DETECTORS:
                raise ValueError(f"unknown detector `{kind}`")
        return []
    hits: list[Hit] = []
    digits: bool | None = None  # whether the text has a digit, once a detector needs to know
    for kind in dict.fromkeys(kinds):
        found = _DETECTORS.get(kind)
        if found is None:
            raise ValueError(f"unknown detector `{kind}`")
        if kind in _NUMBERS:
            if digits is None:
                digits = _DIGIT.search(text) is not None
            if not digits:
                continue
        for start, end in found(text):
            hits.append(Hit(kind, start, end))
    return disjoint(hits) if len(hits) > 1 else hits


def disjoint(hits: Iterable[Hit]) -> list[Hit]:
    """The hits in order, none overlapping another: of two that overlap, the earlier,
    then the longer, is kept."""
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (h.start, h.start - h.end)):
        if not kept or hit.start >= kept[-1].end:
            kept.append(hit)
    return kept


def redact(text: str, hits: Iterable[Hit]) -> str:
    """`text` with every hit replaced by its kind in brackets (`[EMAIL]`).

    `hits` are `detect`'s: in order and non-overlapping.
    """
    parts: list[str] = []
    pos = 0
    for hit in hits:
        parts.append(text[pos : hit.start])
        parts.append(f"[{hit.kind.upper()}]")
        pos = hit.end
    parts.append(text[pos:])
    return "".join(parts)
