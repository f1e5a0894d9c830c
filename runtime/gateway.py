"""The gateway's state: the loaded policy, swapped whole on reload, and what outlives it.

A request takes the `Loaded` snapshot current when it arrives and finishes on
it, whatever reloads happen meanwhile. A reload compiles in a process of its
own: the serving loop keeps its interpreter lock and its garbage collector
(a compile pauses the collector for speed, which would pause the loop's too),
and only unpickles the result, in a thread. A policy that does not compile is
refused and the old one keeps serving. Breakers and pool figures live in the
store, keyed by model name, so they survive the swap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from compiler.compiled import Budget, CompiledPolicy, Quota, Refused, block_id, load
from policies.breaker import State as BreakerState
from policies.ledger import RequestRow, SpendRow
from policies.limits import new_tuple
from policies.store import MemoryStore, Store
from runtime import providers
from runtime.access_log import AccessLog
from runtime.alerts import Alerts
from runtime.caching import Cacher
from runtime.health import HealthChecks
from runtime.limiting import Limiter
from runtime.metrics import Metrics
from runtime.pipeline.exchange import Attempt, Exchange
from runtime.providers.base import Adapter, resolve
from runtime.state import State
from runtime.tracing import Tracing


@dataclass
class Loaded:
    """One policy as it serves: compiled, with an adapter per provider."""

    path: str
    policy: CompiledPolicy
    loaded_at: float
    adapters: dict[str, Adapter]

    @functools.cached_property
    def version(self) -> str:
        """Read on every answer: kept after the first, as an attribute is read."""
        return self.policy.version

    @functools.cached_property
    def version_header(self) -> bytes:
        return self.policy.version.encode()

    @functools.cached_property
    def reads_budget(self) -> bool:
        """Whether a rule asks `budget.team` and its kin, which requests then carry."""
        return any(getattr(node, "attr", "").startswith("budget.")
                   for node in self.policy.graph.nodes)

    @property
    def sources(self) -> list[str]:
        return self.policy.sources


def _quiet() -> None:
    """The compiling process leaves Ctrl-C to the gateway, which stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class Gateway:
    path: str
    env: dict[str, str]
    store: Store = field(default_factory=MemoryStore)
    metrics: Metrics = field(init=False)
    log: AccessLog = field(default_factory=AccessLog)
    current: Loaded | None = None
    refused: dict[str, Any] | None = None
    session: aiohttp.ClientSession | None = None
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    compiler: concurrent.futures.Executor | None = None
    health: HealthChecks = field(init=False)
    state: State = field(default_factory=State.memory)  # counters, keys, ledger
    alerts: Alerts = field(init=False)
    limiter: Limiter = field(init=False)
    cacher: Cacher = field(init=False)
    _alerting: asyncio.Task[None] | None = None
    counters: dict[str, list[dict[str, Any]]] | None = None  # the last reload's, kept or new
    tracing: Tracing | None = None  # made at start as OTEL_* asks (None: off), unless given

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.breaker_states)
        self.health = HealthChecks(self.store)
        self.limiter = self.state.limiter
        url = self.state.cache_url
        self.cacher = Cacher(aioredis.Redis.from_url(url) if url else None)
        self.limiter.on_degraded = self._degraded
        self.limiter.timed = self._store_timed
        ledger = self.state.ledger
        self.alerts = Alerts(ledger.ledger.claim_alert if ledger else None, self._webhook,
                             self._post_alert, self.limiter.clock, self.sleep)

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        self.state.background(work)

    # ------------------------------------------------------------ loading

    async def start(self, compiled: CompiledPolicy | None = None) -> None:
        """Open the upstream connections and serve `compiled` (already compiled by
        `gwc serve`, which compiles once) or else the policy at `path`."""
        if self.tracing is None:
            self.tracing = Tracing.from_env(self.env, self.log)
        # No cookie jar: a cookie an upstream sets (a CDN's, say) is no caller's, and
        # must not ride on the next tenant's call; filtering a jar also costs every call.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            cookie_jar=aiohttp.DummyCookieJar(),
            trace_configs=self.tracing.start() if self.tracing is not None else None)
        await self.state.start()
        self._alerting = asyncio.get_running_loop().create_task(self.alerts.run())
        if compiled is not None:
            self.swap(compiled)
            return
        outcome = await self._reload()
        if self.current is None:
            raise SystemExit(outcome["message"])

    async def close(self) -> None:
        await self.health.stop()
        if self._alerting is not None:
            self._alerting.cancel()
        await self.state.close()
        await self.cacher.close()
        if self.compiler is not None:
            self.compiler.shutdown(wait=False, cancel_futures=True)
        if self.session is not None:
            await self.session.close()
        if self.tracing is not None:
            await self.tracing.stop()
        self.log.flush()

    async def reload(self, trigger: str = "admin") -> dict[str, Any]:
        """Compile the policy again and swap it in, or refuse it and keep the old one;
        either way the outcome is a line of the log, saying what asked for it."""
        outcome = await self._reload()
        self.log.event("reload", f"gwc: reload {outcome['outcome']}: "
                       f"{outcome.get('message') or outcome['version']}", trigger=trigger,
                       outcome=outcome["outcome"], policy=outcome["version"])
        return outcome

    async def _reload(self) -> dict[str, Any]:
        async with self.reload_lock:
            if self.compiler is None:
                self.compiler = concurrent.futures.ProcessPoolExecutor(
                    1, multiprocessing.get_context("spawn"), initializer=_quiet)
            loop = asyncio.get_running_loop()
            try:
                compiled = await loop.run_in_executor(self.compiler, load, self.path, self.env)
            except Refused as refusal:
                self.refused = {"at": time.time(), "diagnostics": refusal.diagnostics}
                self.metrics.reloads.add(("refused",))
                return {"outcome": "refused", "version": self.version,
                        "message": refusal.message, "diagnostics": refusal.diagnostics}
            except concurrent.futures.BrokenExecutor as exc:  # the compiler died (killed, OOM)
                self.compiler = None
                self.metrics.reloads.add(("refused",))
                return {"outcome": "refused", "version": self.version,
                        "message": f"policy refused: the compiling process failed: {exc}",
                        "diagnostics": []}
            await asyncio.to_thread(compiled.warm)
            self.swap(compiled)
            return {"outcome": "loaded", "version": self.version}

    def swap(self, compiled: CompiledPolicy) -> None:
        assert self.session is not None
        adapters = {name: providers.adapter(p, self.session, self.env)
                    for name, p in compiled.providers.items()}
        if self.current is not None:
            self.counters = kept_counters(self.current.policy, compiled)
        self.current = Loaded(self.path, compiled, time.time(), adapters)
        self.cacher.keep_only(compiled.policy.caches)
        self.refused = None
        self.health.watch(compiled, adapters)
        # What survives a load lives until the next one: hidden from the collector,
        # a full collection need not rescan it. No collection is run here: it would
        # stop the loop. The previous policy is freed by reference counting.
        gc.freeze()
        self.metrics.reloads.add(("loaded",))

    @property
    def version(self) -> str:
        return self.current.version if self.current else ""

    # ----------------------------------------------------------- requests

    def spent(self, exchange: Exchange, budgets: tuple[str, ...]) -> None:
        """An answer's spend, for the metrics and (off the request's path) the ledger,
        charged to the budget counters its admission held."""
        deployment, cost, usage = exchange.answered_by, exchange.cost or 0.0, exchange.usage
        assert deployment is not None
        self.metrics.spend.add((deployment.name,), cost)
        ledger = self.state.ledger
        if ledger is None:
            return
        details = usage.get("prompt_tokens_details") or {}
        ledger.add(new_tuple(SpendRow, (
            time.time(), exchange.request_id, exchange.key_id, exchange.team, exchange.user,
            deployment.name, deployment.provider.name, exchange.endpoint.name,
            int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
            int(details.get("cached_tokens") or 0), cost, exchange.status, budgets)))

    def logged(self, exchange: Exchange, answered_by: str | None) -> None:
        """The request log's line (the traffic format: no prompt, no secret); its request
        id puts it in the ledger's one row for the request, beside the spend."""
        ledger, request = self.state.ledger, exchange.request
        if ledger is None or request is None:
            return
        meta = request.meta
        ledger.add(new_tuple(RequestRow, (
            time.time(), exchange.team, exchange.user, exchange.key_id, exchange.endpoint.name,
            request.model, request.stream, request.tools, int(request.tokens),
            _whole(exchange.usage.get("completion_tokens")), _whole(request.max_tokens),
            request.temperature, dict(meta) if meta else None, None, answered_by, exchange.cost,
            exchange.cache, exchange.status, exchange.request_id)))

    def _degraded(self, degraded: bool, reason: str) -> None:
        self.metrics.degraded = int(degraded)
        self.log.event("state", f"gwc: {'degraded' if degraded else 'recovered'}: {reason}",
                       degraded=degraded)

    def _store_timed(self, op: str, seconds: float, ok: bool) -> None:
        self.metrics.store.observe((op,), seconds)
        if not ok:
            self.metrics.store_errors.add((op,))

    def _webhook(self, name: str) -> tuple[str, str] | None:
        notify = self.current.policy.policy.notifies.get(name) if self.current else None
        url = resolve(notify.webhook, self.env) if notify else None
        return (url, notify.format) if notify and url else None

    async def _post_alert(self, url: str, body: dict[str, Any]) -> None:
        assert self.session is not None
        async with self.session.post(url, json=body,
                                     timeout=aiohttp.ClientTimeout(total=10)) as reply:
            reply.raise_for_status()

    def observe_attempt(self, attempt: Attempt) -> None:
        if not attempt.skipped:
            self.metrics.upstream.observe((attempt.model, attempt.provider, attempt.outcome),
                                          attempt.seconds)

    def breaker_states(self) -> dict[str, int]:
        return {name: int(b.state) for name, b in self.store.breakers().items()}

    def breakers(self) -> dict[str, Any]:
        return {name: {"state": BreakerState(b.state).name.lower(), "recent_failures": b.failures}
                for name, b in sorted(self.store.breakers().items())}


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def kept_counters(old: CompiledPolicy, new: CompiledPolicy) -> dict[str, list[dict[str, Any]]]:
    """Which quota and budget counters a reload kept counting on, which it started
    afresh, and which it stopped: by their names (compiler/counters.py)."""
    def blocks(policy: CompiledPolicy) -> dict[str, Quota | Budget]:
        counted: list[Quota | Budget] = [*policy.policy.quotas, *policy.policy.budgets]
        return {block_id(b): b for b in counted}
    before, after = blocks(old), blocks(new)

    def described(found: dict[str, Quota | Budget], ids: list[str]) -> list[dict[str, Any]]:
        return [{"counter_id": i, "subject": str(found[i].subject),
                 "at": f"{os.path.relpath(found[i].source.file, new.folder)}:"
                       f"{found[i].source.line}"} for i in ids]
    return {"kept": described(after, [i for i in after if i in before]),
            "fresh": described(after, [i for i in after if i not in before]),
            "stopped": described(before, [i for i in before if i not in after])}
