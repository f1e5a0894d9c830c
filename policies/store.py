"""Where the mechanisms keep their live state, behind one interface.

A breaker and a model's pool figures are kept by model name, so they outlive
a policy reload; the limits work adds counters behind the same interface,
and a shared store (Redis) beside this one for several replicas. The
request path asks the store, never a module global, so a test or a replica
can hand it another.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

from policies.balancer import Balancer, Figures
from policies.breaker import Breaker, Settings


class Store(abc.ABC):
    @abc.abstractmethod
    def breaker(self, model: str, settings: Settings) -> Breaker:
        """The model's breaker, under the settings the current policy gives it."""

    @abc.abstractmethod
    def breakers(self) -> dict[str, Breaker]:
        """Every breaker, by model name."""

    @abc.abstractmethod
    def figures(self, model: str) -> Figures:
        """The model's latency and calls in flight."""

    @abc.abstractmethod
    def order(self, pool: str, strategy: str, members: Sequence[tuple[str, float]],
              price: Callable[[str], float]) -> list[str]:
        """A pool's members, best first by its strategy and their figures."""


class MemoryStore(Store):
    """The process's own memory: the default, and all one process needs."""

    def __init__(self, balancer: Balancer | None = None) -> None:
        self._breakers: dict[str, Breaker] = {}
        self.balancer = balancer or Balancer()

    def breaker(self, model: str, settings: Settings) -> Breaker:
        found = self._breakers.get(model)
        if found is None:
            found = self._breakers[model] = Breaker(settings)
        found.settings = settings  # a reload may change them; the state stays
        return found

    def breakers(self) -> dict[str, Breaker]:
        return self._breakers

    def figures(self, model: str) -> Figures:
        return self.balancer.of(model)

    def order(self, pool: str, strategy: str, members: Sequence[tuple[str, float]],
              price: Callable[[str], float]) -> list[str]:
        return self.balancer.order(pool, strategy, members, price)
