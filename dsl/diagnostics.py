"""One shape for every problem gwc reports, collected rather than raised.

Passes return lists of these; the driver sorts them by span and hands them to
an output format. Messages follow Cedar's style guide: lowercase, one line, no
final period, user input quoted, advice in `help` rather than in the message.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from dsl.record import Record, field
from dsl.span import Span


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Related(Record):
    """A second place that explains the first ("taken by the rule at 13:3")."""

    span: Span
    message: str


class Diagnostic(Record):
    code: str
    severity: Severity
    message: str
    span: Span
    help: str  # every diagnostic says what to do about it
    related: tuple[Related, ...] = field(default=())

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


def error(code: str, message: str, span: Span, help: str,
          related: Iterable[Related] = ()) -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, message, span, help, tuple(related))


def warning(code: str, message: str, span: Span, help: str,
            related: Iterable[Related] = ()) -> Diagnostic:
    return Diagnostic(code, Severity.WARNING, message, span, help, tuple(related))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a misspelt word, if any is close enough to suggest."""
    import difflib  # only when something is misspelt: it is not free to import

    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def suggestion(word: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for a message, or nothing when no candidate is close."""
    best = did_you_mean(word, candidates)
    return f" (did you mean '{best}'?)" if best else ""


def sort_key(diagnostic: Diagnostic) -> tuple[str, int, int, str]:
    span = diagnostic.span
    return (span.file, span.line, span.column, diagnostic.code)
