"""Quota and budget counters in Redis, shared by every replica.

`redis_counters.lua` runs the whole admission (every quota and budget of the
request, all or nothing) or the whole settle inside Redis, which runs one
script at a time, so two replicas can never both take the last slot. The
script is sent by its SHA (EVALSHA), and whole (EVAL) on NOSCRIPT; the first
call after a Redis restart therefore costs two trips, every later one one.
Script calls go on a connection of their own, straight to redis-py's
`Connection` (its packing, its hiredis parser), past the client's pool, retry
and command layers, which cost more CPU than the round trip itself (about
130 µs a call against 55, timed over 5,000 calls in a row): there is never
more than one script call out, so there is nothing to pool.

Calls coalesce: what this process's callers (one event loop's) ask at the
same time travels in one script call, since redis-py's own work per call
(pool, retry, packing, parsing) costs more than the script. At most one call
is in flight: Redis would run a second one only after the first anyway, and
while one is out the admissions, settles and shares asked meanwhile queue and
go together in the next, in the order asked, so the answers are those of the
calls made one by one in that order (a settle queued behind an admission
frees its slot for the admissions after it). A call asked when none is out
goes at once, alone; a queued one waits for at most the call in flight, and
the callers that call answers get one turn of the event loop to ask again
(a request's settle after its admit) before the sender stops. So the load
sets the batch size by itself, up to MAX_OPS operations and MAX_KEYS keys in
a call (what one caller asks in one call is never split). The script answers
each operation on its own, so a caller gets its own answer or its own
`StoreUnavailable`.

A request's settle does not wait for its answer (`settle_soon`): it rides
with the next script call, most often another request's admission, which
Redis runs after it; with none asked within SETTLE_DELAY it goes alone. So
under load a request costs one round trip, its admission, and other
replicas see a slot freed or spend settled at most SETTLE_DELAY late.

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
that in all, counted for each caller from when it asks, queued or not: a
stalled Redis fails every waiting caller on time) and every failure is a
`StoreUnavailable` naming the server but never its credentials. A caller that
gives up on a call already sent leaves its admission to lapse with its lease.
A replica keeps at most `connections` connections and queues calls for them
(the script calls use one at a time; `seed`, `spent` and `ping` the others).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from policies.limits import (
    BUCKETS,
    CONCURRENCY_RETRY,
    HOLD,
    RETAIN,
    SLACK,
    Admission,
    CounterStore,
    Limit,
    Prepared,
    StoreUnavailable,
    Verdict,
    forget_expired,
    new_tuple,
    subjects,
)
from policies.periods import period_bounds, period_key, period_of

T = TypeVar("T")
logger = logging.getLogger("gwc")
FIELDS = 7  # per limit in the answer: allowed, taken, remaining, reset, retry, share, reason
KEPT = 4096  # strings kept per kind of cache (keys, a limit's fixed fields) before starting over
# One script call's bounds, so that a burst does not hold Redis (every replica's) for long:
# operations (an admission, one reservation's settle, a share) and keys (each argument
# beyond an operation's own is a subject, which has a key).
MAX_OPS = 64
MAX_KEYS = 1024
SETTLE_DELAY = 0.01  # seconds a `settle_soon` waits for a call to ride with before it goes alone
# What a reservation holds of one counter, as the settle script wants it: the counter,
# its keys, and its fields for the script around the real cost ("kind amount bucket extra",
# bucket and extra: the tokens bucket and window, or when a budget period's keys expire).
Item = tuple[str, list[str], str]


def _num(value: float) -> str:
    """A float as the script reads it back exactly."""
    return repr(float(value))


@lru_cache(maxsize=64)
def _budget_figures(period: str, day: int) -> tuple[str, str]:
    """A budget's period end and keys' expiry as the script reads them: per (period, day)."""
    ends, expires = _expiry(period, day * 86400.0)
    return _num(ends), _num(expires)


class Queued:
    """One caller's operations, waiting for the script call that carries them."""

    __slots__ = ("args", "deadline", "future", "keys", "ops", "what")

    def __init__(self, what: str, keys: list[str], args: list[str], ops: int,
                 future: asyncio.Future[list[str]], deadline: float) -> None:
        self.what, self.keys, self.args, self.ops = what, keys, args, ops
        self.future, self.deadline = future, deadline  # deadline: on the event loop's clock


class RedisCounters(CounterStore):
    def __init__(self, url: str, namespace: str = "gw", timeout: float = 0.5,
                 connections: int = 16) -> None:
        parts = urlsplit(url)
        self._where = f"{parts.hostname}:{parts.port or 6379}"
        self._bound = timeout * 4  # connect, send, answer, NOSCRIPT
        self._tag = "{" + namespace + "}"
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=connections, timeout=self._bound, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), decode_responses=True)
        self._redis = aioredis.Redis.from_pool(pool)
        self._source = resources.files("policies").joinpath("redis_counters.lua").read_text()
        self._sha = hashlib.sha1(self._source.encode()).hexdigest()
        # the script calls' connection: without a socket timeout of its own, since every
        # call is bounded by its callers' (and a call cut short drops the connection)
        self._script_connection: AbstractConnection = pool.connection_class(
            **{**pool.connection_kwargs, "socket_timeout": None})
        self._held: OrderedDict[str, tuple[float, list[Item]]] = OrderedDict()  # by age
        # Reservation ids: unique across replicas (their leases share Redis's sets), from a
        # random prefix per store and a count, not a system call's randomness per request.
        self._prefix = secrets.token_hex(8)
        self._ids = itertools.count(1)
        self._keys_of: dict[tuple[str, str], tuple[str, ...]] = {}  # (kind, counter) -> keys
        self._fixed: dict[tuple[str, float, float, float | None, bool], str] = {}
        self._head = f" {_num(SLACK)} {BUCKETS} {_num(CONCURRENCY_RETRY)}"
        self._queue: deque[Queued] = deque()
        self._out = False  # a script call is in flight: new ones queue
        self._sender: asyncio.Task[None] | None = None  # sends what queued, while any is
        # settles that ride with the next script call (`settle_soon`): their keys and ops,
        # and the timer that sends them alone if no call comes first
        self._riding_keys: list[str] = []
        self._riding: list[str] = []
        self._flush: asyncio.TimerHandle | None = None
        self._alone: set[asyncio.Task[None]] = set()

    def prepare(self, limits: Sequence[Limit]) -> Prepared:
        return Scripted(self, limits)

    async def admit_prepared(self, prepared: Prepared, costs: Sequence[float], now: float,
                             lease: float) -> Admission:
        assert isinstance(prepared, Scripted) and prepared.store is self
        prepared.check(costs)
        if self._held:
            forget_expired(self._held, now)
        rid = f"{self._prefix}{next(self._ids):x}"
        places = subjects(prepared.limits, now, lease) if prepared.families else {}
        keys: list[str] = []
        fields = [""]  # the header, once the keys are counted
        held: list[Item | None] = []
        for (kind, counter, head, tail, figure, state), cost in zip(prepared.entries, costs,
                                                                     strict=True):
            written = repr(float(cost))  # as `_num`, without the call: several a request
            if kind == "budget":  # figure: the period; state: [start, end, keys, figures]
                if not state[0] <= now < state[1]:
                    state[:] = self._period(counter, figure, now)
                _, _, pair_keys, ends_expires, expires = state
                fields.append(f"{head}{written}{tail}{ends_expires}")
                held.append((counter, pair_keys, f"budget {written} 0 {expires}"))
            else:  # state: the keys; figure: a tokens window's width, and the window written
                pair_keys = state
                fields.append(f"{head}{written}{tail}")
                if kind == "tokens":
                    width, window = figure
                    held.append((counter, pair_keys,
                                 f"tokens {written} {math.floor(now / width)} {window}"))
                elif kind == "concurrency":
                    held.append((counter, pair_keys, f"concurrency {written} 0 0.0"))
                else:
                    held.append(None)  # requests: nothing to settle
            keys += pair_keys
        subject_args = []
        for (family, subject), (cap, until) in places.items():
            keys.append(f"{self._tag}:f:{family}")
            fields.append(f"{cap} {_num(until)}")
            subject_args.append(subject)
        fields[0] = (f"admit {len(keys)} {len(places)} {_num(now)} {_num(lease)} {rid} "
                     f"{len(held)}{self._head}")
        reply = await self._call("admit", keys, [" ".join(fields), *subject_args], 1)
        answer = reply[0].split(" ")
        verdicts, items = [], []
        figures = iter(answer)
        admitted, refused = next(figures) == "1", int(next(figures))
        for (allowed, taken, remaining, reset, retry, share, reason), entry in zip(
                zip(*[figures] * FIELDS, strict=True), held, strict=True):
            verdicts.append(new_tuple(Verdict, (
                allowed == "1", float(remaining), float(reset), float(retry),
                None if share == "-" else float(share), "" if reason == "-" else reason)))
            if taken == "1" and entry is not None:
                items.append(entry)
        if items:
            self._held[rid] = (now + lease + HOLD, items)
        return Admission(admitted, verdicts, rid if items else None,
                         None if refused < 0 else refused)

    def _period(self, counter: str, period: str, now: float) -> list[Any]:
        """A budget's period holding `now`, as a prepared budget keeps it: [start, end,
        its keys, its end and its keys' expiry written for the script, the expiry]."""
        place, start, end = period_of(period, now)
        ends, expires = _budget_figures(period, math.floor(now / 86400))
        return [start, end, self._budget_keys(counter, place), f" {ends} {expires}", expires]

    async def settle(self, reservation: str, actual: Mapping[str, float], now: float) -> None:
        await self.settle_many([(reservation, actual)], now)

    async def settle_many(self, settles: Sequence[tuple[str, Mapping[str, float]]],
                          now: float) -> None:
        """Several reservations in one script call: one round trip for all of them."""
        keys: list[str] = []
        args: list[str] = []
        for reservation, actual in settles:
            self._settle_op(reservation, actual, now, keys, args)
        if args:
            await self._call("settle", keys, args, len(args))

    def settle_soon(self, reservation: str, actual: Mapping[str, float], now: float) -> None:
        """With the next script call (an admission, most often: under load, each
        request's settle rides with a later one's admission, so a request costs one
        round trip), or alone after SETTLE_DELAY if none comes."""
        if not self._settle_op(reservation, actual, now, self._riding_keys, self._riding):
            return
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(SETTLE_DELAY, self._settle_alone)

    def _settle_op(self, reservation: str, actual: Mapping[str, float], now: float,
                   keys: list[str], args: list[str]) -> bool:
        """Add one reservation's settle to a call's keys and ops; False if it holds
        nothing (refused, or already settled)."""
        _, items = self._held.pop(reservation, (0.0, []))
        if not items:
            return False
        first = len(keys)
        fields = [f"{reservation} {BUCKETS}"]
        for counter, pair_keys, figures in items:
            keys += pair_keys
            fields.append(f"{figures} {_num(actual.get(counter, 0.0))}")
        args.append(f"settle {len(keys) - first} 0 {_num(now)} {' '.join(fields)}")
        return True

    def _take_riding(self) -> tuple[list[str], list[str]]:
        """The settles waiting to ride, taken off (the timer with them)."""
        keys, args = self._riding_keys, self._riding
        self._riding_keys, self._riding = [], []
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        return keys, args

    def _settle_alone(self) -> None:
        self._flush = None
        task = asyncio.get_running_loop().create_task(self._send_riding())
        self._alone.add(task)
        task.add_done_callback(self._alone.discard)

    async def _send_riding(self) -> None:
        keys, args = self._take_riding()
        if args:
            try:
                await self._call("settle", keys, args, len(args))
            except StoreUnavailable as failure:
                logger.warning("gwc: %d settles not sent, their leases lapse: %s",
                               len(args), failure)

    async def share(self, counters: Sequence[tuple[str, float, str]],
                    now: float) -> dict[str, float]:
        if not counters:
            return {}
        keys: list[str] = []
        limits = []
        for counter, limit, period in counters:
            keys += self._budget_keys(counter, period_key(period, now))
            limits.append(_num(limit))
        header = f"share {len(keys)} 0 {_num(now)} {' '.join(limits)}"
        reply = (await self._call("share", keys, [header], 1))[0].split(" ")
        return {counter: float(value) for (counter, _, _), value in zip(counters, reply,
                                                                       strict=True)}

    async def seed(self, counter: str, period: str, spent: float, now: float) -> bool:
        key = self._budget_keys(counter, period_key(period, now))[0]
        _, expires = _expiry(period, now)

        async def write() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hsetnx(key, "spent", _num(spent))
                pipe.expire(key, math.ceil(expires - now) + 1)
                result: list[Any] = await pipe.execute()
                return result
        return bool((await self._run("seed", write))[0])

    async def spent(self, counter: str, period: str, now: float) -> float:
        key = self._budget_keys(counter, period_key(period, now))[0]
        value = await self._run("spent", lambda: self._redis.hget(key, "spent"))
        return float(value) if value is not None else 0.0

    async def ping(self) -> None:
        await self._run("ping", self._redis.ping)

    async def close(self) -> None:
        """Let what is queued go first (settles at shutdown: no spend is lost), then close."""
        await self._send_riding()
        if self._alone:
            await asyncio.wait(set(self._alone))
        if self._sender is not None:
            await asyncio.wait([self._sender])
        await self._script_connection.disconnect()
        await self._redis.aclose()

    async def _run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """One bounded call; any failure of Redis or the network is StoreUnavailable."""
        try:
            async with asyncio.timeout(self._bound):
                return await call()
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(what, exc) from exc

    async def _call(self, what: str, keys: list[str], args: list[str], ops: int) -> list[str]:
        """`ops` operations in a script call: at once if none is in flight, else queued
        for the next; their answers, in order.

        Bounded from now, however long the queue: the sender answers every
        caller by its deadline (one timer per script call, not one per caller).
        """
        riders = 0
        if self._riding and what != "settle":
            riding_keys, riding = self._take_riding()
            if len(riding_keys) + len(keys) <= MAX_KEYS and len(riding) + ops <= MAX_OPS:
                keys, args, ops, riders = riding_keys + keys, riding + args, ops + len(riding), \
                    len(riding)
            else:  # too many to ride with this one: they go on their own
                self._riding_keys, self._riding = riding_keys, riding
                self._settle_alone()
        try:
            answers = await self._script_call(what, keys, args, ops)
        except StoreUnavailable:
            if riders:
                logger.warning("gwc: %d settles not sent, their leases lapse", riders)
            raise
        if riders:
            failed = [answer for answer in answers[:riders] if answer[:1] == "!"]
            if failed:
                logger.warning("gwc: %d settles failed in redis at %s, their leases lapse (%s)",
                               len(failed), self._where, failed[0][1:])
            answers = answers[riders:]
        for answer in answers:
            if answer[:1] == "!":
                raise StoreUnavailable(f"redis at {self._where}: {what} failed ({answer[1:]})")
        return answers

    async def _script_call(self, what: str, keys: list[str], args: list[str],
                           ops: int) -> list[str]:
        """At once if no call is in flight, else queued for the sender's next."""
        if self._out:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[list[str]] = loop.create_future()
            self._queue.append(Queued(what, keys, args, ops, future, loop.time() + self._bound))
            return await future
        self._out = True
        try:
            return await self._run(what, lambda: self._script(keys, args))
        finally:
            if self._queue:  # asked while this call was out: the sender takes it on
                self._sender = asyncio.create_task(self._send())
            else:
                self._out = False

    async def _send(self) -> None:
        """Send the queue, one script call at a time, until it stays empty a turn.

        A call ends by its oldest caller's deadline (the queue is in order of
        asking, so every later caller's comes after); a caller whose deadline
        passed while an earlier call was out fails without being sent.
        """
        queue = self._queue
        loop = asyncio.get_running_loop()
        batch: list[Queued] = []
        try:
            while queue:
                batch, ops = [], 0
                keys: list[str] = []
                args: list[str] = []
                now = loop.time()
                while queue:
                    entry = queue[0]
                    if batch and (ops + entry.ops > MAX_OPS
                                  or len(keys) + len(entry.keys) > MAX_KEYS):
                        break
                    queue.popleft()
                    if entry.future.done():  # its caller was cancelled
                        continue
                    if entry.deadline <= now:
                        entry.future.set_exception(self._unavailable(entry.what, TimeoutError()))
                        continue
                    batch.append(entry)
                    keys += entry.keys
                    args += entry.args
                    ops += entry.ops
                if not batch:
                    continue
                try:
                    async with asyncio.timeout_at(batch[0].deadline):
                        reply = await self._script(keys, args)
                except (RedisError, OSError, TimeoutError) as exc:
                    for entry in batch:
                        if not entry.future.done():
                            entry.future.set_exception(self._unavailable(entry.what, exc))
                else:
                    at = 0
                    for entry in batch:
                        if not entry.future.done():
                            entry.future.set_result(reply[at:at + entry.ops])
                        at += entry.ops
                if not queue:  # one turn for the callers just answered: what they ask next
                    await asyncio.sleep(0)  # (a request's settle after its admit) rides along
        except BaseException as exc:  # cancelled mid-call, or a bug: nobody is left to hang
            for entry in [*batch, *queue]:
                if not entry.future.done():
                    entry.future.set_exception(self._unavailable(entry.what, exc))
            queue.clear()
            raise
        finally:
            self._out, self._sender = False, None

    async def _script(self, keys: list[str], args: list[str]) -> list[str]:
        """One script call on the store's script connection; the script goes whole if
        Redis does not know it (a restart, SCRIPT FLUSH). A call cancelled midway drops
        the connection (redis-py's `Connection` does), so no answer is read as another's."""
        connection = self._script_connection
        await connection.send_packed_command(_command("EVALSHA", self._sha, keys, args),
                                             check_health=False)
        try:
            reply: list[str] = await connection.read_response()
        except NoScriptError:
            await connection.send_packed_command(_command("EVAL", self._source, keys, args),
                                                 check_health=False)
            reply = await connection.read_response()
        return reply

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        failure = StoreUnavailable(
            f"redis at {self._where}: {what} failed ({type(exc).__name__})")
        failure.__cause__ = exc
        return failure


    def _counter_keys(self, kind: str, counter: str) -> list[str]:
        """A quota's keys in the script's order: one for requests and tokens, two for slots."""
        found = self._keys_of.get((kind, counter))
        if found is None:
            tag = self._tag
            found = ((f"{tag}:q:{counter}",) if kind == "requests" else
                     (f"{tag}:t:{counter}",) if kind == "tokens" else
                     (f"{tag}:c:{counter}", f"{tag}:cl:{counter}"))
            if len(self._keys_of) >= KEPT:
                self._keys_of.clear()
            self._keys_of[kind, counter] = found
        return list(found)

    def _budget_keys(self, counter: str, place: str) -> list[str]:
        return [f"{self._tag}:b:{place}:{counter}", f"{self._tag}:bl:{place}:{counter}"]

    def _fixed_fields(self, item: Limit) -> str:
        """The fields of a limit that come back unchanged request after request.

        Kept by value: values equal as numbers give the script the same answers
        (-0.0 and 0.0 can only be a burst or a budget's window, which it reads as 0).
        """
        key = (item.kind, item.limit, item.window, item.burst, item.enforce)
        found = self._fixed.get(key)
        if found is None:
            burst = item.limit if item.burst is None else item.burst
            found = (f"{item.kind} {_num(item.limit)} {_num(item.window)} {_num(burst)} "
                     f"{int(item.enforce)}")
            if len(self._fixed) >= KEPT:
                self._fixed.clear()
            self._fixed[key] = found
        return found


class Scripted(Prepared):
    """Prepared limits for one `RedisCounters`: for each, its kind, counter, its
    script fields before the cost (the fixed ones) and after it (its place among the
    request's capped subjects, 0 for none), and its keys (a budget: its last
    period's keys and figures, [start, end, keys, end and expiry written, expiry]; a
    tokens quota also keeps its bucket width and window)."""

    __slots__ = ("entries", "store")

    def __init__(self, store: RedisCounters, limits: Sequence[Limit]) -> None:
        super().__init__(limits)
        self.store = store
        pairs: dict[tuple[str, str], int] = {}  # in `subjects`' order, numbered from 1
        entries: list[tuple[str, str, str, str, Any, Any]] = []
        for item in limits:
            kind, counter = item.kind, item.counter
            pair = 0
            if item.family:
                pair = pairs.setdefault((item.family, item.subject or counter), len(pairs) + 1)
            head = store._fixed_fields(item) + " "
            if kind == "budget":
                entries.append((kind, counter, head, f" {pair}", item.period,
                                [math.inf, -math.inf, [], "", ""]))
            else:
                figure = (item.window / BUCKETS, _num(item.window)) if kind == "tokens" else None
                entries.append((kind, counter, head, f" {pair} 0.0 0.0", figure,
                                store._counter_keys(kind, counter)))
        self.entries = tuple(entries)


def _command(verb: str, script: str, keys: list[str], args: list[str]) -> bytes:
    """A script call in RESP, as redis-py's `pack_command` writes it but at a fraction of
    its CPU: every argument here is a str, so none of its checks for other types, and
    each is encoded, measured and framed by `map`, in C."""
    parts = list(map(str.encode, (verb, script, str(len(keys)), *keys, *args)))
    return b"*%d\r\n" % len(parts) + b"".join(map(_BULK.__mod__,
                                                   zip(map(len, parts), parts, strict=True)))


_BULK = b"$%d\r\n%b\r\n"  # a RESP bulk string: its length, then itself


def _expiry(period: str, now: float) -> tuple[float, float]:
    """A budget period's end, and when its keys may go (RETAIN periods after it)."""
    start, end = period_bounds(period, now)
    return end, end + RETAIN * (end - start)
