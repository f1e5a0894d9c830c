"""A clock a test sets by hand, for the `clock` every mechanism and store takes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
