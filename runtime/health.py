"""Active health checks: a cheap call to each provider that asks for one, on an interval.

A provider whose `health { }` block is set is called every `interval` (its
adapter's cheapest call, such as listing models). When a check succeeds,
every open or half-open breaker of that provider's models closes: a provider
that is back takes traffic again before a live request has to probe it. A
failed check changes nothing; live traffic is what opens a breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from compiler.compiled import CompiledPolicy, Health
from policies.store import Store
from runtime.errors import UpstreamError
from runtime.providers.base import Adapter

logger = logging.getLogger("gwc")


class HealthChecks:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self.tasks: list[asyncio.Task[None]] = []
        self.checks = 0  # made so far, for tests and metrics

    def watch(self, policy: CompiledPolicy, adapters: dict[str, Adapter]) -> None:
        """Check the providers of this policy from now on, and no longer the last one's."""
        for task in self.tasks:
            task.cancel()
        self.tasks = []
        for name, provider in policy.providers.items():
            if provider.health is None:
                continue
            models = [d.name for d in policy.deployments.values() if d.provider.name == name]
            self.tasks.append(asyncio.get_running_loop().create_task(
                self._check(adapters[name], provider.health, models),
                name=f"gwc-health-{name}"))

    async def _check(self, adapter: Adapter, health: Health, models: list[str]) -> None:
        while True:
            await asyncio.sleep(health.interval)
            self.checks += 1
            try:
                await adapter.check_health(health.timeout)
            except UpstreamError as failure:
                logger.debug("health check of %s failed: %s", adapter.provider.name,
                             failure.message)
                continue
            for model in models:
                breaker = self.store.breakers().get(model)
                if breaker is not None:
                    breaker.heal()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
