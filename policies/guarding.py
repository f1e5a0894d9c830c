"""What a request's guards find in a text, and what they make of it, whole or streamed.

A `Check` is one guard as this mechanism needs it: its detectors and what their
hits do, its deny patterns (compiled by the caller on a linear-time engine, as
one alternation, with the needles (compiler/needles.py) a text must hold for
them to be searched at all), and
whether it only watches (`shadow`). `findings` runs a list of checks over one
text; `Verdict` is what they decide for a whole text, and `Holdback` decides the
same for a text that arrives in pieces, releasing it a window behind the newest
character so that a card number split over four chunks is still one card.

Nothing here knows a wire format or a request: the pipeline's guard stages
(runtime/pipeline/guards.py) find the texts and put the released ones back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from policies.detectors import Hit, detect, disjoint, redact

PATTERN = "pattern"  # the kind a `deny` pattern's match is reported under
WINDOW = 64  # characters held back behind a stream's newest: longer than any short hit
STEP = 32  # characters gathered past the window before the next look, so most chunks cost none
CONTEXT = 32  # released characters kept to read the next piece's first hit in context
# A run of text with no space is held whole (a key, an email, a JWT), up to this long:
# past it the run is released in windows like any other text.
LONGEST_HELD = 8192


class Match(Protocol):
    def start(self) -> int: ...
    def end(self) -> int: ...


class Pattern(Protocol):
    def search(self, text: str) -> Match | None: ...


class Check(NamedTuple):
    name: str
    detect: tuple[str, ...]
    deny: Pattern | None  # the guard's deny patterns as one alternation: a search costs one call
    action: str  # deny, redact, flag: what a detector's hit does
    shadow: bool  # reports what it would do, and does nothing
    needles: tuple[str, ...] | None = None  # a text with none of these can't match `deny`


class Finding(NamedTuple):
    """One check's hit: `kind` is a detector's name, or `pattern` for a deny pattern."""

    guard: str
    kind: str
    action: str
    shadow: bool
    start: int
    end: int


def findings(text: str, checks: Sequence[Check]) -> list[Finding]:
    """Every check's hits in `text`: its deny patterns' first match, each detector hit."""
    found: list[Finding] = []
    kinds_seen: dict[tuple[str, ...], list[Hit]] = {}
    folded: str | None = None  # the text casefolded, once a check's needles need it
    for check in checks:
        if check.deny is not None and check.needles is not None:
            if folded is None:
                folded = text.casefold()
            searched = any(needle in folded for needle in check.needles)
        else:
            searched = check.deny is not None
        if searched:
            assert check.deny is not None
            match = check.deny.search(text)
            if match is not None:
                found.append(Finding(check.name, PATTERN, "deny", check.shadow,
                                     match.start(), match.end()))
        if check.detect:
            hits = kinds_seen.get(check.detect)
            if hits is None:
                hits = kinds_seen[check.detect] = detect(text, check.detect)
            if hits:
                found.extend(Finding(check.name, h.kind, check.action, check.shadow, h.start,
                                     h.end) for h in hits)
    return found


def refusal(found: Iterable[Finding]) -> Finding | None:
    """The first finding that refuses the text, if one does."""
    return next((f for f in found if f.action == "deny" and not f.shadow), None)


def redactions(found: Iterable[Finding]) -> list[Hit]:
    """The hits an enforcing `redact` replaces: in order, none overlapping another."""
    return disjoint({Hit(f.kind, f.start, f.end) for f in found
                     if f.action == "redact" and not f.shadow})


@dataclass(slots=True)
class Verdict:
    """What the checks make of a whole text: refused (by which finding), or the text
    to send on (redacted where they say), with every finding for the log."""

    text: str
    refused: Finding | None
    found: list[Finding]


def judge(text: str, checks: Sequence[Check]) -> Verdict:
    found = findings(text, checks)
    if not found:  # nearly every text: nothing more to decide
        return Verdict(text, None, found)
    denied = refusal(found)
    if denied is not None:
        return Verdict(text, denied, found)
    hits = redactions(found)
    return Verdict(redact(text, hits) if hits else text, None, found)


@dataclass(slots=True)
class Holdback:
    """One streamed text, checked as it grows and released a window behind.

    `feed` takes the next piece and gives what may go on now, redacted; `close` gives
    the rest once the text is over. What is released has been read with at least
    `WINDOW` characters after it and never ends inside a run of non-space (nor inside
    a hit), so any hit shorter than the window, and any key or address written
    without spaces, is whole when it is judged. A refusal is raised as `Refused`.
    """

    checks: Sequence[Check]
    window: int = WINDOW
    pending: str = ""  # arrived, not yet released
    looked: int = 0  # how much was pending at the last look
    context: str = ""  # the last released characters, as they came (unredacted)
    found: list[Finding] = field(default_factory=list)  # the released text's findings

    def feed(self, piece: str) -> str:
        self.pending += piece
        size = len(self.pending)
        # a look costs a scan of everything pending: wait for a step's worth of new text,
        # and for a run held whole, for a quarter more, so a long one costs linear time
        if size < self.window + STEP or size - self.looked < max(STEP, self.looked // 4):
            return ""
        return self._release(final=False)

    def close(self) -> str:
        return self._release(final=True) if self.pending else ""

    def _release(self, final: bool) -> str:
        text, offset = self.context + self.pending, len(self.context)
        found = findings(text, self.checks)
        denied = refusal(f for f in found if f.end > offset)
        if denied is not None:
            raise Refused(denied)
        pending = self.pending
        cut = len(pending) if final else _cut(pending, len(pending) - self.window)
        hits = redactions(found)
        for hit in hits:  # never release part of a hit: hold it from its start
            if hit.start - offset < cut < hit.end - offset:
                cut = max(hit.start - offset, 0)
        released = pending[:cut]
        self.found += [f for f in found if offset <= f.start < offset + cut]
        mine = [Hit(h.kind, max(h.start - offset, 0), min(h.end - offset, cut))
                for h in hits if h.end > offset and h.start < offset + cut]
        self.context = (self.context + released)[-CONTEXT:]
        self.pending = pending[cut:]
        self.looked = len(self.pending)
        return redact(released, mine) if mine else released


def _cut(text: str, at: int) -> int:
    """Where to end a release at or before `at`: after a space, so no word is split;
    a run longer than `LONGEST_HELD` is split where the window says."""
    if at <= 0:
        return 0
    if text[at - 1].isspace() or text[at].isspace():
        return at
    space = max(text.rfind(" ", 0, at), text.rfind("\n", 0, at), text.rfind("\t", 0, at))
    if space >= 0:
        return space + 1
    return at if len(text) > LONGEST_HELD else 0


class Refused(Exception):
    """A streamed text a guard refuses: the rest of the stream must not go on."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(f"guard '{finding.guard}' refused the text ({finding.kind})")
        self.finding = finding
