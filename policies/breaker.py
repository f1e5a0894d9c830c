"""A circuit breaker per model: closed, open, half-open with probes.

Closed counts failures in a sliding window; `failures` of them (or, with
`error_rate`, that share of at least `min_requests` outcomes) open it. Open
refuses every call until `cooldown` has passed, then lets `probes` calls
through (half-open): all succeed and it closes, one fails and it opens again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum


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
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)  # (when, failed)
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

    def would_allow(self) -> bool:
        """`allows` without taking a probe: for skipping open targets in a plan."""
        if self.state is State.OPEN:
            return self.clock() - self.opened_at >= self.settings.cooldown
        if self.state is State.HALF_OPEN:
            return self.probes_out < self.settings.probes
        return True

    def record(self, failed: bool) -> None:
        now = self.clock()
        if self.state is State.HALF_OPEN:
            if failed:
                self._open(now)
                return
            self.probes_ok += 1
            if self.probes_ok >= self.settings.probes:
                self.state = State.CLOSED
                self.outcomes.clear()
            return
        if self.state is State.OPEN:
            return
        self.outcomes.append((now, failed))
        while self.outcomes and now - self.outcomes[0][0] > self.settings.window:
            self.outcomes.popleft()
        failures = sum(f for _, f in self.outcomes)
        if failures >= self.settings.failures or self._rate_exceeded(failures):
            self._open(now)

    def _rate_exceeded(self, failures: int) -> bool:
        rate, total = self.settings.error_rate, len(self.outcomes)
        return rate is not None and total >= self.settings.min_requests and \
            failures / total >= rate

    def _open(self, now: float) -> None:
        self.state, self.opened_at = State.OPEN, now
        self.outcomes.clear()
