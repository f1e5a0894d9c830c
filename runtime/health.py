"""Active health checks: a cheap call on an interval, for the models whose breakers are open.

A provider whose `health { }` block is set is watched every `interval`: for
each of its models whose breaker is open or half-open, its adapter makes the
cheapest call about that model (its entry in the provider's model list).
When one succeeds, that breaker closes: a model that is back takes traffic
again before a live request has to probe it. While every breaker is closed
no check is made, and a failed check changes nothing: live traffic is what
opens a breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from compiler.compiled import CompiledPolicy, Deployment, Health
from policies.breaker import State
from policies.store import Store
from runtime.errors import UpstreamError
from runtime.providers.base import Adapter

logger = logging.getLogger("gwc")


class HealthChecks:
    def __init__(self, store: Store,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.store = store
        self.sleep = sleep
        self.tasks: list[asyncio.Task[None]] = []

    def watch(self, policy: CompiledPolicy, adapters: dict[str, Adapter]) -> None:
        """Check the providers of this policy from now on, and no longer the last one's."""
        for task in self.tasks:
            task.cancel()
        self.tasks = []
        for name, provider in policy.providers.items():
            if provider.health is None:
                continue
            models = [d for d in policy.deployments.values() if d.provider.name == name]
            self.tasks.append(asyncio.get_running_loop().create_task(
                self._watch(adapters[name], provider.health, models),
                name=f"gwc-health-{name}"))

    async def _watch(self, adapter: Adapter, health: Health, models: list[Deployment]) -> None:
        while True:
            await self.sleep(health.interval)
            await self.round(adapter, health, models)

    async def round(self, adapter: Adapter, health: Health, models: list[Deployment]) -> None:
        """One round of checks: each model whose breaker is not closed, in turn."""
        for deployment in models:
            breaker = self.store.breakers().get(deployment.name)
            if breaker is None or breaker.state is State.CLOSED:
                continue
            try:
                await adapter.check_health(deployment.model, health.timeout)
            except UpstreamError as failure:
                logger.debug("health check of %s failed: %s", deployment.name, failure.message)
                continue
            breaker.heal()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
