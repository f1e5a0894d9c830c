"""A plan's fallback chain, run: pools picked, breakers heeded, retries, fallback.

Targets expand to models (a pool to its members, best first by its strategy;
`requested` to the model the request named). A model is skipped while its
breaker is open or when its `context` is smaller than the request's tokens.
Each model is tried up to its provider's `retry.attempts` times, with backoff,
on the failures `retry.on` names; then the chain falls back to the next model
on 429, 5xx, timeouts and refused connections, and never on a 4xx the next
model would refuse too. A stream falls back only before its first chunk.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from compiler.policy import Breaker as PolicyBreaker
from compiler.policy import Model, Policy
from policies import backoff
from policies.balancer import Balancer
from policies.breaker import Breaker, Settings
from runtime.errors import GatewayError, UpstreamError
from runtime.providers.base import Adapter, Body, Timeouts

DEFAULT_TIMEOUT = 60.0
T = TypeVar("T")


@dataclass
class Attempt:
    model: str
    provider: str
    outcome: str  # "ok", a status, "timeout", "connect", "skipped: ..."
    seconds: float = 0.0


@dataclass
class Live:
    """Figures that outlive a reload, keyed by model name."""

    breakers: dict[str, Breaker] = field(default_factory=dict)
    balancer: Balancer = field(default_factory=Balancer)

    def breaker(self, model: Model, policy: Policy) -> Breaker:
        settings = _settings(policy.providers[model.provider].breaker)
        found = self.breakers.get(model.name)
        if found is None:
            found = self.breakers[model.name] = Breaker(settings)
        found.settings = settings  # a reload may change them; the state stays
        return found

    def states(self) -> dict[str, int]:
        return {name: int(breaker.state) for name, breaker in self.breakers.items()}


@functools.lru_cache(maxsize=256)
def _settings(b: PolicyBreaker) -> Settings:
    """The mechanism's settings for a policy's breaker block, made once per block.

    `policies/` imports nothing of ours, so it keeps its own settings type.
    """
    return Settings(b.failures, b.window, b.cooldown, b.probes, b.error_rate, b.min_requests)


class Chain:
    """One request's way through its targets."""

    def __init__(self, policy: Policy, adapters: dict[str, Adapter], live: Live,
                 observe: Callable[[Attempt], None],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.policy = policy
        self.adapters = adapters
        self.live = live
        self.observe = observe
        self.sleep = sleep
        self.attempts: list[Attempt] = []

    def models(self, targets: list[str], tokens: float) -> list[Model]:
        out: list[Model] = []
        for name in targets:
            pool = self.policy.pools.get(name)
            if pool is None:
                names = [name]
            else:
                names = self.live.balancer.order(name, pool.strategy,
                                                 [(m.model, m.weight) for m in pool.members],
                                                 self.price)
            for model_name in names:
                model = self.policy.models[model_name]
                if any(chosen.name == model_name for chosen in out):
                    continue
                if model.context is not None and tokens > model.context:
                    self.record(Attempt(model.name, model.provider,
                                        f"skipped: {tokens:g} tokens over its context"))
                    continue
                out.append(model)
        return out

    def price(self, model: str) -> float:
        return self.policy.models[model].input_price or 0.0

    def record(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        self.observe(attempt)

    def timeouts(self, model: Model) -> Timeouts:
        total = model.timeout or self.policy.providers[model.provider].timeout or DEFAULT_TIMEOUT
        return Timeouts(connect=min(10.0, total), first_byte=total, idle=total, total=total)

    async def run(self, targets: list[str], tokens: float,
                  call: Callable[[Adapter, Model, Timeouts], Awaitable[T]]) -> tuple[Model, T]:
        """The first model's answer that succeeds, trying as the policy says."""
        for model in self.models(targets, tokens):
            breaker = self.live.breaker(model, self.policy)
            provider = self.policy.providers[model.provider]
            retry = provider.retry
            for attempt in range(1, max(1, retry.attempts) + 1):
                if not breaker.allows():
                    self.record(Attempt(model.name, model.provider, "skipped: breaker open"))
                    break
                figures = self.live.balancer.of(model.name)
                figures.in_flight += 1
                started = time.monotonic()
                try:
                    result = await call(self.adapters[provider.name], model, self.timeouts(model))
                except UpstreamError as failure:
                    seconds = time.monotonic() - started
                    breaker.record(failed=failure.counts_against_upstream)  # before the gauge
                    self.record(Attempt(model.name, model.provider, failure.label, seconds))
                    if not failure.worth_falling_back:
                        raise _refused(failure) from failure
                    if attempt < retry.attempts and failure.matches(retry.on):
                        await self.sleep(backoff.delay(attempt, retry.backoff_min,
                                                       retry.backoff_max, failure.retry_after))
                        continue
                    break
                except BaseException:
                    breaker.abandon()
                    raise
                finally:
                    figures.in_flight -= 1
                seconds = time.monotonic() - started
                figures.observe(seconds)
                breaker.record(failed=False)
                self.record(Attempt(model.name, model.provider, "ok", seconds))
                return model, result
        raise self.exhausted()

    def exhausted(self) -> GatewayError:
        """Every target failed: 504 if they all timed out, 503 if none could be tried."""
        tried = [a for a in self.attempts if not a.outcome.startswith("skipped")]
        summary = "; ".join(f"{a.model} ({a.provider}): {a.outcome}" for a in self.attempts)
        if not tried:
            return GatewayError(503, f"no target could be tried: {summary or 'none left'}",
                                "no_target_available")
        if all(a.outcome == "timeout" for a in tried):
            return GatewayError(504, f"every target timed out: {summary}", "upstream_timeout")
        return GatewayError(502, f"every target failed: {summary}", "upstream_failed")

    async def open_stream(self, targets: list[str], tokens: float, body: Body
                          ) -> tuple[Model, Body, AsyncIterator[Body]]:
        """A stream whose first chunk has arrived: fallback ends there."""
        async def first_chunk(adapter: Adapter, model: Model, timeouts: Timeouts
                              ) -> tuple[Body, AsyncIterator[Body]]:
            chunks = adapter.stream(model, body, timeouts)
            try:
                return await anext(chunks), chunks
            except StopAsyncIteration as exc:
                raise UpstreamError("connect", f"{model.provider}: empty stream") from exc
            except BaseException:
                await chunks.aclose()  # type: ignore[attr-defined]  # release the connection now
                raise
        model, (first, rest) = await self.run(targets, tokens, first_chunk)
        return model, first, rest


def _refused(failure: UpstreamError) -> GatewayError:
    """An upstream's own refusal of the request, passed on with its status."""
    status = failure.status or 400
    return GatewayError(status if 400 <= status < 500 else 400, failure.message,
                        "upstream_rejected")
