"""What the gateway keeps beyond the policy: counters, keys, the ledger, alerts.

Two settings choose where (interface.md): `GW_STATE_URL` for the counters
(`memory`, the default, or `redis://...` shared by replicas) and `GW_DB_URL`
for the durable records (keys, the spend ledger, the request log; SQLite at
`.gw/gw.db` by default, or `postgresql://...`). Nothing here runs on the
request's path but dict lookups and appends: key refreshes, ledger writes,
settles and alerts happen in threads and tasks of their own, and `close`
waits for them, so a SIGTERM loses no settled spend.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.keys import KeyRing
from policies.ledger import LedgerWriter
from policies.limits import CounterStore
from policies.memory_counters import MemoryCounters
from policies.records import Records, RecordsError, open_records
from policies.responses_store import ResponsesStore
from runtime.limiting import MIN_LEASE, Limiter

logger = logging.getLogger("gwc")
DEFAULT_DB = "sqlite:///.gw/gw.db"
KEY_REFRESH = 0.25  # seconds: a revoked key is refused everywhere within one second


class StateError(Exception):
    """A setting that names no store gwc can use: one line, for `gwc serve` to print."""


def shares_counters(url: str) -> bool:
    """Whether GW_STATE_URL names Redis (shared) or memory; StateError if neither."""
    if url in ("", "memory"):
        return False
    if url.startswith(("redis://", "rediss://", "unix://")):
        return True
    raise StateError(f"GW_STATE_URL must be `memory` or redis://...; got {url.split(':')[0]}:...")


def counters_from(url: str) -> CounterStore:
    if not shares_counters(url):
        return MemoryCounters()
    from policies.redis_counters import RedisCounters

    return RedisCounters(url)


def min_lease_from(env: Mapping[str, str]) -> float:
    """`GW_MIN_LEASE`: the seconds a budget reservation or a concurrency slot is held at
    least (default 60) when the chain's timeouts are shorter. Past its lease, what a
    replica killed mid-call held is counted no more; a test sets it short to see that."""
    text = env.get("GW_MIN_LEASE", "")
    if not text:
        return MIN_LEASE
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise StateError(f"GW_MIN_LEASE must be a number of seconds > 0; got {text!r}")
    return seconds


@dataclass
class State:
    limiter: Limiter
    records: Records | None = None
    keyring: KeyRing | None = None
    ledger: LedgerWriter | None = None
    shared: bool = False  # counters in Redis, shared by every replica
    cache_url: str | None = None  # cached answers shared in this Redis, else in memory
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _refresher: asyncio.Task[None] | None = None

    @classmethod
    def memory(cls, clock: Callable[[], float] = time.time) -> State:
        """Counters in memory and no database: for tests and embedded use."""
        return cls(Limiter(MemoryCounters(), clock))

    @classmethod
    def from_env(cls, env: Mapping[str, str], clock: Callable[[], float] = time.time) -> State:
        state_url = env.get("GW_STATE_URL") or "memory"
        min_lease = min_lease_from(env)
        counters = counters_from(state_url)
        try:
            records = open_records(env.get("GW_DB_URL") or DEFAULT_DB)
        except RecordsError as exc:
            raise StateError(str(exc)) from exc
        ledger = LedgerWriter(records)
        limiter = Limiter(counters, clock, seed=ledger.ledger.period_spend_by_counter,
                          min_lease=min_lease)
        shared = shares_counters(state_url)
        return cls(limiter, records, KeyRing(records), ledger, shared=shared,
                   cache_url=state_url if shared else None)

    @functools.cached_property
    def responses(self) -> ResponsesStore | None:
        """The Responses API's stored responses, in the records database (None: none)."""
        return ResponsesStore(self.records) if self.records is not None else None

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` off the request's path; `close` waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("gwc: background work failed", exc_info=task.exception())

    async def start(self) -> None:
        if self.keyring is not None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_keys())

    async def _refresh_keys(self) -> None:
        assert self.keyring is not None
        keyring = self.keyring
        while True:
            await asyncio.sleep(KEY_REFRESH)
            try:
                await asyncio.to_thread(keyring.refresh)
            except RecordsError as exc:  # keep the keys known; say so, and try again
                logger.warning("gwc: cannot refresh the keys: %s", exc)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=10)
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close)
        with contextlib.suppress(TimeoutError):  # a store too slow to answer: the leases lapse
            await asyncio.wait_for(self.limiter.counters.close(), timeout=10)  # its settles go
        if self.records is not None:
            self.records.close()
