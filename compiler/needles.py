"""The words a deny pattern can't match without, looked for before RE2 is asked.

google-re2's binding lets go of the GIL on every search, and beside a thread
that wants it (the ledger's writer, the access log's) a 1.5 µs search measured
tens of µs in the gateway. Most deny patterns name words (`(?i)project\\s+bluebird`):
a text with none of a guard's words can't match any of its patterns, and
`in` says so in C, holding the GIL. So each pattern's longest run of literal
characters is its needle, compared casefolded, which is never stricter than
RE2's case-insensitive matching.

A pattern is read in a small part of RE2's syntax: literal characters and
escaped punctuation, `.`, `\\s \\d \\w` and their negations, `\\b \\B ^ $`,
bracketed classes without POSIX names, groups `(...)` and `(?:...)`, the
quantifiers `* + ? {n,m}` (lazy too), `|`, and a leading `(?i)`. Anything else
gives the pattern no needle, and a guard with such a pattern always asks RE2.
"""

from __future__ import annotations

from collections.abc import Sequence

PUNCTUATION = frozenset("\\.^$*+?()[]{}|-/!\"#%&',:;<=>@_`~ ")
CLASSES = frozenset("sSdDwW")  # `\s` and its kin: one character, not a literal one
ZERO_WIDTH = frozenset("bB")


class _Unread(Exception):
    """A construct outside the part of the syntax read here."""


def needles(patterns: Sequence[str]) -> tuple[str, ...] | None:
    """One casefolded needle a pattern (an alternation counts as its branches) can't
    match without; None when some pattern or branch has none, or isn't read here."""
    found: list[str] = []
    for pattern in patterns:
        try:
            found += _Reader(pattern).pattern()
        except _Unread:
            return None
    return tuple(dict.fromkeys(found)) if found else None


class _Reader:
    def __init__(self, pattern: str) -> None:
        self.text = pattern.removeprefix("(?i)")
        self.at = 0

    def pattern(self) -> list[str]:
        branches = self.alternation()
        if self.at != len(self.text):
            raise _Unread  # an unmatched `)`
        return branches

    def alternation(self) -> list[str]:
        """A needle per branch; any branch without one leaves the whole without one."""
        branches = [self.sequence()]
        while self.peek() == "|":
            self.at += 1
            branches.append(self.sequence())
        if any(not b for b in branches):
            raise _Unread
        return [max(b, key=len) for b in branches]

    def sequence(self) -> list[str]:
        """The runs of literal characters every match holds, in order."""
        runs: list[str] = []
        run = ""
        while self.peek() not in ("", "|", ")"):
            literal = self.atom()
            if self.quantified():  # optional or repeated: no longer a fixed character
                literal = None
            if literal is None:
                runs.append(run)
                run = ""
            elif literal != "":  # "" is zero-width: the run goes on across it
                run += literal
        runs.append(run)
        return [r.casefold() for r in runs if r]

    def atom(self) -> str | None:
        """One item: its literal character, "" for a zero-width one, None for any other."""
        char = self.text[self.at]
        self.at += 1
        if char == "\\":
            escaped = self.text[self.at:self.at + 1]
            self.at += 1
            if escaped in PUNCTUATION:
                return escaped
            if escaped in CLASSES:
                return None
            if escaped in ZERO_WIDTH:
                return ""
            raise _Unread
        if char in "^$":
            return ""
        if char == ".":
            return None
        if char == "[":
            self.bracket()
            return None
        if char == "(":
            if self.text.startswith("?:", self.at):
                self.at += 2
            elif self.peek() == "?":
                raise _Unread  # flags, names, lookaround
            self.alternation_in_group()
            return None
        if char in "*+?{})]":
            raise _Unread  # a quantifier with nothing before it, or a stray bracket
        return char

    def alternation_in_group(self) -> None:
        """A group's content, read to be sure it is in the syntax; its literals are left
        out (a group may be optional or repeated), which only makes the needle shorter."""
        depth = 1
        while depth:
            char = self.peek()
            if char == "":
                raise _Unread
            if char == "(":
                self.at += 1
                if self.text.startswith("?:", self.at):
                    self.at += 2
                elif self.peek() == "?":
                    raise _Unread
                depth += 1
            elif char == ")":
                self.at += 1
                depth -= 1
            elif char == "\\":
                self.atom()
            elif char == "[":
                self.at += 1
                self.bracket()
            else:
                self.at += 1

    def bracket(self) -> None:
        """A bracketed class, after its `[`: to its closing `]`, no POSIX names."""
        if self.peek() == "^":
            self.at += 1
        if self.peek() == "]":
            self.at += 1
        while (char := self.peek()) != "]":
            if char == "":
                raise _Unread
            if char == "[" and self.text.startswith("[:", self.at):
                raise _Unread
            if char == "\\":
                self.at += 1
                escaped = self.peek()
                if escaped not in PUNCTUATION and escaped not in CLASSES:
                    raise _Unread
            self.at += 1
        self.at += 1

    def quantified(self) -> bool:
        """Whether a quantifier follows (and is read, with a lazy `?` after it)."""
        char = self.peek()
        if char in ("*", "+", "?"):
            self.at += 1
        elif char == "{":
            close = self.text.find("}", self.at)
            inside = self.text[self.at + 1:close] if close > 0 else ""
            low, _, high = inside.partition(",")
            if not low.isdigit() or (high and not high.isdigit()):
                raise _Unread  # RE2 reads a brace that is no repeat as a literal
            self.at = close + 1
        else:
            return False
        if self.peek() == "?":
            self.at += 1
        return True

    def peek(self) -> str:
        return self.text[self.at:self.at + 1]
