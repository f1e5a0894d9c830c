"""Pools: the order to try a pool's members in, by its strategy and live figures.

Figures are kept per model name (so they outlive a policy reload): an EWMA of
latency and the number of calls in flight. A pool returns every member, best
first, so that a failing pick falls through to the others.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

EWMA_WEIGHT = 0.2  # how much the newest latency counts


@dataclass
class Figures:
    latency: float | None = None  # seconds, exponentially weighted
    in_flight: int = 0

    def observe(self, seconds: float) -> None:
        self.latency = seconds if self.latency is None else \
            (1 - EWMA_WEIGHT) * self.latency + EWMA_WEIGHT * seconds


@dataclass
class Balancer:
    figures: dict[str, Figures] = field(default_factory=dict)
    turns: dict[str, itertools.count[int]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def of(self, model: str) -> Figures:
        found = self.figures.get(model)
        if found is None:
            found = self.figures[model] = Figures()
        return found

    def order(self, pool: str, strategy: str, members: Sequence[tuple[str, float]],
              price: Callable[[str], float] = lambda model: 0.0) -> list[str]:
        """Members best first. `members` are (model, weight); `price` is asked only
        by least_cost, so the others never look prices up."""
        names = [m for m, _ in members]
        if strategy == "round_robin":
            turn = next(self.turns.setdefault(pool, itertools.count())) % len(names)
            return names[turn:] + names[:turn]
        if strategy == "least_latency":
            # an untried model goes first, so every member gets measured
            return sorted(names, key=lambda m: (self.of(m).latency is not None,
                                                self.of(m).latency or 0.0))
        if strategy == "least_busy":
            return sorted(names, key=lambda m: self.of(m).in_flight)
        if strategy == "least_cost":
            return sorted(names, key=price)
        return self._weighted(members)

    def _weighted(self, members: Sequence[tuple[str, float]]) -> list[str]:
        """A weighted draw without replacement (Efraimidis-Spirakis keys)."""
        keyed = [(self.rng.random() ** (1.0 / weight), model) for model, weight in members]
        return [model for _, model in sorted(keyed, reverse=True)]
