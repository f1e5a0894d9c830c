"""Quota and budget counters in Redis, shared by every replica.

Each call is one round trip: `redis_counters.lua` runs the whole admission
(every quota and budget of the request, all or nothing) or the whole settle
inside Redis, which runs one script at a time, so two replicas can never both
take the last slot. The script is sent by its SHA (EVALSHA) and loaded on
NOSCRIPT, as redis-py's `register_script` does; the first call after a Redis
restart therefore costs three trips, every later one one.

Keys: `{<namespace>}:q:<counter>` (requests, the theoretical arrival time),
`:t:<counter>` (tokens, a hash of buckets), `:c:` and `:cl:<counter>`
(concurrency: a running total and its leases), `:b:` and `:bl:<period>:<counter>`
(a budget's settled spend and reserved total, and its leases, one pair per
period such as 2026-12), `:f:<family>` (capped subjects and until when they
hold their place). The braces are a Redis Cluster hash tag: a script may only
touch keys of one slot, so every counter of a namespace lives in one slot, on
one shard. Counters are a few bytes each and the one round trip is the point;
a deployment that outgrows one shard gives its tenants namespaces of their own.
Every key expires once nothing in it can count any more (a window, a lease),
and a budget period one period after it ends, so Redis never fills up.

Time is the caller's `now`, not Redis's TIME, so that tests move it and the
script stays deterministic; replicas therefore need synchronized clocks (NTP).
GCRA tolerates small skew: a replica a few ms ahead lets a request in a few ms
early, never more than the burst.

Reservations are kept in this process until settled (settle comes from the
process that admitted), so a settle sends only what it changes. Every call is
bounded (`timeout`, 0.5 s by default, to connect and to answer; four times
that in all) and every failure is a `StoreUnavailable` naming the server but
never its credentials. A replica keeps at most `connections` connections and
queues calls for them: Redis runs scripts one at a time anyway, and a burst of
300 requests opening 300 connections at once is what would time out.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from policies.limits import (
    BUCKETS,
    CONCURRENCY_RETRY,
    HOLD,
    RETAIN,
    SLACK,
    Admission,
    CounterStore,
    Limit,
    StoreUnavailable,
    Verdict,
    subjects,
    validate,
)
from policies.periods import period_bounds, period_key

T = TypeVar("T")
FIELDS = 7  # per limit in the answer: allowed, taken, remaining, reset, retry, share, reason


@dataclass(frozen=True, slots=True)
class Item:
    """What a reservation holds of one counter, as the settle script wants it."""

    kind: str
    counter: str
    keys: tuple[str, str]
    amount: str
    bucket: str = "0"  # tokens: the bucket the estimate went into
    extra: str = "0"   # tokens: the window; budgets: when the period's keys expire


def _num(value: float) -> str:
    """A float as the script reads it back exactly."""
    return repr(float(value))


class RedisCounters(CounterStore):
    def __init__(self, url: str, namespace: str = "gw", timeout: float = 0.5,
                 connections: int = 16) -> None:
        parts = urlsplit(url)
        self._where = f"{parts.hostname}:{parts.port or 6379}"
        self._timeout = timeout
        self._tag = "{" + namespace + "}"
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=connections, timeout=timeout * 4, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), decode_responses=True)
        self._redis = aioredis.Redis.from_pool(pool)
        source = resources.files("policies").joinpath("redis_counters.lua").read_text()
        self._script = self._redis.register_script(source)
        self._held: OrderedDict[str, tuple[float, list[Item]]] = OrderedDict()  # by age

    async def admit(self, limits: Sequence[Limit], now: float, lease: float) -> Admission:
        validate(limits)
        self._forget(now)
        rid = secrets.token_hex(8)
        places = subjects(limits, now, lease)
        index = {pair: j + 1 for j, pair in enumerate(places)}
        keys: list[str] = []
        args: list[str | int] = ["admit", _num(now), _num(lease), rid, len(limits), len(places),
                                 _num(SLACK), BUCKETS, _num(CONCURRENCY_RETRY)]
        held: list[Item] = []
        for item in limits:
            pair = index.get((item.family, item.subject or item.counter), 0) if item.family else 0
            ends, expires = self._period(item, now)
            burst = item.limit if item.burst is None else item.burst
            first, second = self._keys(item, now)
            keys += [first, second]
            args += [item.kind, _num(item.limit), _num(item.window), _num(burst),
                     _num(item.cost), int(item.enforce), pair, _num(ends), _num(expires)]
            held.append(self._item(item, (first, second), now, expires))
        for (family, subject), (cap, until) in places.items():
            keys.append(f"{self._tag}:f:{family}")
            args += [cap, subject, _num(until)]
        reply = await self._run("admit", lambda: self._script(keys=keys, args=args))
        verdicts, items = [], []
        for i, entry in enumerate(held):
            allowed, taken, remaining, reset, retry, share, reason = \
                reply[2 + i * FIELDS: 2 + (i + 1) * FIELDS]
            verdicts.append(Verdict(allowed == 1, float(remaining), float(reset), float(retry),
                                    float(share) if share != "" else None, reason))
            if taken == 1 and entry.kind != "requests":
                items.append(entry)
        if items:
            self._held[rid] = (now + lease + HOLD, items)
        refused = int(reply[1])
        return Admission(reply[0] == 1, verdicts, rid if items else None,
                         None if refused < 0 else refused)

    async def settle(self, reservation: str, actual: Mapping[str, float], now: float) -> None:
        _, items = self._held.pop(reservation, (0.0, []))
        if not items:
            return
        keys: list[str] = []
        args: list[str | int] = ["settle", _num(now), reservation, BUCKETS]
        for item in items:
            keys += item.keys
            args += [item.kind, item.amount, _num(actual.get(item.counter, 0.0)), item.bucket,
                     item.extra]
        await self._run("settle", lambda: self._script(keys=keys, args=args))

    async def share(self, counters: Sequence[tuple[str, float, str]],
                    now: float) -> dict[str, float]:
        if not counters:
            return {}
        keys: list[str] = []
        args: list[str | int] = ["share", _num(now)]
        for counter, limit, period in counters:
            keys += self._budget_keys(counter, period, now)
            args.append(_num(limit))
        reply = await self._run("share", lambda: self._script(keys=keys, args=args))
        return {counter: float(value) for (counter, _, _), value in zip(counters, reply,
                                                                       strict=True)}

    async def seed(self, counter: str, period: str, spent: float, now: float) -> bool:
        key = self._budget_keys(counter, period, now)[0]
        _, expires = _expiry(period, now)

        async def write() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hsetnx(key, "spent", _num(spent))
                pipe.expire(key, math.ceil(expires - now) + 1)
                result: list[Any] = await pipe.execute()
                return result
        return bool((await self._run("seed", write))[0])

    async def spent(self, counter: str, period: str, now: float) -> float:
        key = self._budget_keys(counter, period, now)[0]
        value = await self._run("spent", lambda: self._redis.hget(key, "spent"))
        return float(value) if value is not None else 0.0

    async def ping(self) -> None:
        await self._run("ping", self._redis.ping)

    async def close(self) -> None:
        await self._redis.aclose()

    async def _run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """One bounded call; any failure of Redis or the network is StoreUnavailable."""
        try:
            async with asyncio.timeout(self._timeout * 4):  # connect, send, answer, NOSCRIPT
                return await call()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(
                f"redis at {self._where}: {what} failed ({type(exc).__name__})") from exc

    def _forget(self, now: float) -> None:
        """Drop reservations nobody settled, well past their lease (callers that leaked them)."""
        while self._held:
            keep, _ = next(iter(self._held.values()))  # OrderedDict: O(1), unlike a dict's
            if keep > now:
                return
            self._held.popitem(last=False)

    def _keys(self, item: Limit, now: float) -> list[str]:
        tag, counter = self._tag, item.counter
        if item.kind == "requests":
            return [f"{tag}:q:{counter}"] * 2
        if item.kind == "tokens":
            return [f"{tag}:t:{counter}"] * 2
        if item.kind == "concurrency":
            return [f"{tag}:c:{counter}", f"{tag}:cl:{counter}"]
        return self._budget_keys(counter, item.period, now)

    def _budget_keys(self, counter: str, period: str, now: float) -> list[str]:
        place = period_key(period, now)
        return [f"{self._tag}:b:{place}:{counter}", f"{self._tag}:bl:{place}:{counter}"]

    def _period(self, item: Limit, now: float) -> tuple[float, float]:
        return _expiry(item.period, now) if item.kind == "budget" else (0.0, 0.0)

    def _item(self, item: Limit, pair: tuple[str, str], now: float, expires: float) -> Item:
        if item.kind == "tokens":
            bucket = math.floor(now / (item.window / BUCKETS))
            return Item("tokens", item.counter, pair, _num(item.cost), str(bucket),
                        _num(item.window))
        return Item(item.kind, item.counter, pair, _num(item.cost), extra=_num(expires))


def _expiry(period: str, now: float) -> tuple[float, float]:
    """A budget period's end, and when its keys may go (RETAIN periods after it)."""
    start, end = period_bounds(period, now)
    return end, end + RETAIN * (end - start)
