"""The language's units: what a suffix means and how values convert.

Case matters, as the language says: `m` is minutes and `M` is million. A
value in the wrong unit is told apart from a plain typo, so that `5M` where a
duration belongs can be answered with "did you mean '5m'?".
"""

from __future__ import annotations

DURATIONS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
COUNTS = {"": 1, "k": 1_000, "M": 1_000_000, "B": 1_000_000_000}
PERIODS = {
    "second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0,
    "week": 7 * 86400.0, "month": 30 * 86400.0,  # nominal; budgets use the calendar month
}
STATUS_CLASS = "xx"

# Spellings people reach for, and the suffix the language uses instead.
SYNONYMS = {
    "sec": "s", "secs": "s", "second": "s", "seconds": "s", "min": "m", "mins": "m",
    "minute": "m", "minutes": "m", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "day": "d", "days": "d", "msec": "ms", "millis": "ms", "K": "k", "m%": "%",
    "thousand": "k", "mil": "M", "million": "M", "bn": "B", "billion": "B",
}

# What the same suffix is called in the other family, for "did you mean".
DURATION_FOR_COUNT = {"M": "m", "B": "d", "k": "s"}
COUNT_FOR_DURATION = {"m": "M"}


def suffix_kind(number: str, suffix: str) -> str | None:
    """`duration`, `count`, `percent`, `status_class`, or None for an unknown suffix."""
    if suffix in DURATIONS and suffix:
        return "duration"
    if suffix in COUNTS:
        return "count"
    if suffix == "%":
        return "percent"
    if suffix == STATUS_CLASS and number in "12345" and len(number) == 1:
        return "status_class"
    return None


def duration_seconds(number: str, suffix: str) -> float:
    return float(number) * DURATIONS[suffix]


def count_value(number: str, suffix: str) -> float:
    return float(number) * COUNTS[suffix]


def money_value(amount: str, suffix: str) -> float:
    return float(amount) * COUNTS[suffix]


def format_seconds(seconds: float) -> str:
    """A duration the way a person writes it: `250ms`, `30s`, `5m`, `1h`."""
    for suffix in ("d", "h", "m", "s"):
        unit = DURATIONS[suffix]
        if seconds >= unit and (seconds / unit).is_integer():
            return f"{int(seconds / unit)}{suffix}"
    return f"{round(seconds * 1000, 3):g}ms"


def format_count(count: float) -> str:
    """A count the way a person writes it: `600`, `1.5k`, `2M`."""
    for suffix in ("B", "M", "k"):
        unit = COUNTS[suffix]
        if count >= unit:
            return f"{count / unit:g}{suffix}"
    return f"{count:g}"
