"""Calendar periods for budgets: a day, an ISO week, a month, all in UTC.

A budget's spend is kept per period, under a key naming the period's start
(`2026-12-01`, `2026-W49`, `2026-12`), so that a new period starts from zero
without erasing the old one: the ledger and `spent()` for an earlier `now`
still read it. UTC, because replicas in different zones must agree on when a
day ends; ISO weeks, because they start on Monday and number the same way
everywhere.

Both answers depend on the UTC day only, and every admission asks them for
each budget, so they are computed once per (period, day): datetime's
arithmetic and strftime cost tens of µs where a request has a few to spend.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache

PERIODS = ("day", "week", "month")


def _start(period: str, now: float) -> datetime:
    moment = datetime.fromtimestamp(now, UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period `{period}`; expected day, week or month")


def _after(period: str, start: datetime) -> datetime:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def period_of(period: str, now: float) -> tuple[str, float, float]:
    """`period_key` and `period_bounds` at once: (key, start, end)."""
    return _period(period, math.floor(now / 86400))


def period_key(period: str, now: float) -> str:
    """The name of the period holding `now`: `2026-12-01`, `2026-W49` or `2026-12`."""
    return _period(period, math.floor(now / 86400))[0]


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """The period holding `now` as [start, end) in epoch seconds."""
    _, start, end = _period(period, math.floor(now / 86400))
    return start, end


@lru_cache(maxsize=256)
def _period(period: str, day: int) -> tuple[str, float, float]:
    start = _start(period, day * 86400.0)
    if period == "day":
        key = start.strftime("%Y-%m-%d")
    elif period == "week":
        year, week, _ = start.isocalendar()
        key = f"{year}-W{week:02d}"
    else:
        key = start.strftime("%Y-%m")
    return key, start.timestamp(), _after(period, start).timestamp()
