"""Retry delays: exponential with full jitter, and the upstream's Retry-After first."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime
from time import time


def delay(attempt: int, low: float, high: float, retry_after: float | None = None,
          rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry).

    Full jitter (AWS's "exponential backoff and jitter"): uniform between 0 and
    the capped exponential. An upstream's Retry-After wins when it gives one,
    capped at `high` so a hostile header cannot park a request.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), high)
    ceiling = min(high, low * (2 ** (attempt - 1)))
    return (rng or random).uniform(0, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp() - time()
    except (TypeError, ValueError):
        return None
