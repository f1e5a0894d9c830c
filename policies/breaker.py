"""A circuit breaker per model: closed, open, half-open with probes.

Closed counts failures in a sliding window; `failures` of them (or, with
`error_rate`, that share of at least `min_requests` outcomes) open it. The
window is kept as BUCKETS time buckets with running totals, so recording an
outcome costs the same at 10 requests a second as at 10,000. Open
refuses every call until `cooldown` has passed, then lets `probes` calls
through (half-open): all succeed and it closes, one fails and it opens again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

BUCKETS = 30  # the window's resolution: a failure leaves it within window/30 of on time


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class Settings:
    failures: int = 5
    window: float = 30.0
    cooldown: float = 60.0
    probes: int = 1
    error_rate: float | None = None
    min_requests: int = 10


@dataclass
class Breaker:
    settings: Settings
    clock: Callable[[], float] = time.monotonic
    state: State = State.CLOSED
    opened_at: float = 0.0
    buckets: deque[list[int]] = field(default_factory=deque)  # [slot, outcomes, failures]
    total: int = 0
    failures: int = 0
    probes_out: int = 0
    probes_ok: int = 0

    def allows(self) -> bool:
        """Whether a call may go through now; a half-open breaker hands out its probes."""
        if self.state is State.OPEN:
            if self.clock() - self.opened_at < self.settings.cooldown:
                return False
            self.state, self.probes_out, self.probes_ok = State.HALF_OPEN, 0, 0
        if self.state is State.HALF_OPEN:
            if self.probes_out >= self.settings.probes:
                return False
            self.probes_out += 1
        return True

    def abandon(self) -> None:
        """A call that ended without an outcome (cancelled because its client left)
        says nothing of the upstream's health: a probe it held goes back."""
        if self.state is State.HALF_OPEN and self.probes_out > self.probes_ok:
            self.probes_out -= 1

    def heal(self) -> None:
        """An active health check found the upstream back: close now, so that no
        live request has to be the probe."""
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._forget()

    def record(self, failed: bool) -> None:
        now = self.clock()
        if self.state is State.HALF_OPEN:
            if failed:
                self._open(now)
                return
            self.probes_ok += 1
            if self.probes_ok >= self.settings.probes:
                self.state = State.CLOSED
                self._forget()
            return
        if self.state is State.OPEN:
            return
        self._count(now, failed)
        if self.failures >= self.settings.failures or self._rate_exceeded():
            self._open(now)

    def _count(self, now: float, failed: bool) -> None:
        width = self.settings.window / BUCKETS
        slot = int(now // width)
        while self.buckets and self.buckets[0][0] <= slot - BUCKETS:
            _, outcomes, failures = self.buckets.popleft()
            self.total -= outcomes
            self.failures -= failures
        if not self.buckets or self.buckets[-1][0] != slot:
            self.buckets.append([slot, 0, 0])
        self.buckets[-1][1] += 1
        self.buckets[-1][2] += failed
        self.total += 1
        self.failures += failed

    def _rate_exceeded(self) -> bool:
        rate = self.settings.error_rate
        return rate is not None and self.total >= self.settings.min_requests and \
            self.failures / self.total >= rate

    def _forget(self) -> None:
        self.buckets.clear()
        self.total = self.failures = 0

    def _open(self, now: float) -> None:
        self.state, self.opened_at = State.OPEN, now
        self._forget()
