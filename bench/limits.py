"""Time per request for the quota and budget counters, and Redis round trips.

    python -m bench.limits                    # 2,000 requests, local Redis db 15
    python -m bench.limits --requests 5000 --url redis://127.0.0.1:6379/15

A request is one admit and its settle, one after the other on one connection,
the settle sent as the gateway sends it (`settle_soon`: with Redis it rides
with the next request's admission, so a request is one round trip), for two
plans of five limits: `typical` (a requests and a tokens quota, a slot, two
budgets) and `quotas` (two requests quotas, a tokens quota, two budgets).
The figure is the median over batches of the time per admit+settle pair (CPU
time of this process, but wall time for a real Redis round trip), and
the best batch beside it (the machine is shared: the best is the least
disturbed). Round trips are counted on the client, as the commands redis-py
writes to the socket while the batches run, and divided by the requests; the
server's EVALSHA count is printed beside it. The namespace is a fresh one,
deleted after.

`redis concurrent` runs CONCURRENT requests at once, each an admit then its
settle, over and over, as a gateway's requests do: the store carries what they ask together, so a
request costs less than one round trip. Its figures are the wall time per
request (all of them over the requests) and this process's CPU time per
request (redis-py's work per call, shared by the calls carried together).

`redis client` is RedisCounters' own Python work, without Redis: the script
call is stubbed by one answering what Redis answered to the same plan, so the
figure is what the store costs the process besides the round trip; `+ packing`
adds the encoding of the EVALSHA command (still no socket).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from redis.asyncio.connection import Connection

from policies.limits import CounterStore, Limit, Prepared
from policies.memory_counters import MemoryCounters
from policies.redis_counters import RedisCounters, _command

NOW = 1_800_000_000.0
BATCH = 100
CONCURRENT = 8


def typical(i: int) -> list[Limit]:
    team = f"team-{i % 8}"
    return [
        Limit(f"q1:requests:{team}", "requests", 1e9, window=60),
        Limit(f"q1:tokens:{team}", "tokens", 1e12, window=60, cost=1200),
        Limit(f"q2:concurrency:{team}", "concurrency", 1e6),
        Limit(f"b1:{team}", "budget", 1e9, period="month", cost=0.02),
        Limit("b2:org", "budget", 1e9, period="day", cost=0.02),
    ]


def quotas(i: int) -> list[Limit]:
    team = f"team-{i % 8}"
    return [
        Limit(f"q1:requests:{team}", "requests", 1e9, window=60),
        Limit(f"q3:requests:key-{i % 32}", "requests", 1e9, window=1, burst=1e6),
        Limit(f"q1:tokens:{team}", "tokens", 1e12, window=60, cost=1200),
        Limit(f"b1:{team}", "budget", 1e9, period="month", cost=0.02),
        Limit("b2:org", "budget", 1e9, period="day", cost=0.02),
    ]


PLANS: dict[str, Callable[[int], list[Limit]]] = {"typical": typical, "quotas": quotas}


async def pairs(store: CounterStore, requests: int,
                plan: Callable[[int], list[Limit]] = typical,
                clock: Callable[[], float] = time.process_time) -> list[float]:
    """Seconds per admit+settle pair, one figure per batch of BATCH requests.

    In CPU seconds of this process by default (what the counters cost it,
    whatever else runs on the machine); `time.perf_counter` for a round trip.
    Preparing the limits (once for each set, as the gateway keeps them) and the
    settle's mapping is the caller's work, done before the clock starts.
    """
    samples = []
    kept: dict[tuple[Limit, ...], Prepared] = {}
    for start in range(0, requests, BATCH):
        batch = [(NOW + i / 1000, prepared(store, kept, plan(i)),
                  {f"q1:tokens:team-{i % 8}": 900.0, f"b1:team-{i % 8}": 0.01})
                 for i in range(start, start + BATCH)]  # the caller's work: not timed
        began = clock()
        for now, (limits, costs), actual in batch:
            answer = await store.admit_prepared(limits, costs, now, 60)
            assert answer.admitted and answer.reservation is not None
            store.settle_soon(answer.reservation, actual, now)  # as the gateway settles
        samples.append((clock() - began) / BATCH)
    return samples


def prepared(store: CounterStore, kept: dict[tuple[Limit, ...], Prepared],
             limits: list[Limit]) -> tuple[Prepared, list[float]]:
    """`limits` prepared by `store` (the same set once) and their costs."""
    key = tuple(limits)
    found = kept.get(key)
    if found is None:
        found = kept[key] = store.prepare(limits)
    return found, [item.cost for item in limits]


def line(name: str, samples: list[float]) -> str:
    return (f"{name:<22} {statistics.median(samples) * 1e6:8.1f} us per admit+settle "
            f"(median; best batch {min(samples) * 1e6:.1f})")


def operations(args: list[str]) -> list[str]:
    """What each operation of a script call is (admit, settle, share): its header's first
    word; the header's third says how many arguments of its own follow it."""
    found, at = [], 0
    while at < len(args):
        header = args[at].split(" ", 3)
        found.append(header[0])
        at += 1 + int(header[2])
    return found


async def client_side(store: RedisCounters, requests: int, plan: Callable[[int], list[Limit]],
                      pack: bool) -> list[float]:
    """`pairs` with the script answered in-process by what Redis answered to this plan."""
    answers: dict[str, Any] = {}
    real = store._script

    async def record(keys: list[str], args: list[str]) -> Any:
        reply = await real(keys, args)
        answers.update(zip(operations(args), reply, strict=True))
        return reply

    async def stub(keys: list[str], args: list[str]) -> Any:
        if pack:
            _command("EVALSHA", store._sha, keys, args)
        return [answers[op] for op in operations(args)]

    store._script = record  # type: ignore[assignment]
    await pairs(store, 1, plan)
    store._script = stub  # type: ignore[assignment]
    try:
        return await pairs(store, requests, plan)
    finally:
        store._script = real


async def concurrent(store: CounterStore, requests: int) -> tuple[float, float]:
    """Wall and CPU seconds per request, CONCURRENT at a time, each admit then settle."""
    kept: dict[tuple[Limit, ...], Prepared] = {}

    async def one(first: int) -> None:
        for i in range(first, requests, CONCURRENT):
            now = NOW + i / 1000
            limits, costs = prepared(store, kept, typical(i))
            answer = await store.admit_prepared(limits, costs, now, 60)
            assert answer.admitted and answer.reservation is not None
            store.settle_soon(answer.reservation, {f"q1:tokens:team-{i % 8}": 900.0,
                                                   f"b1:team-{i % 8}": 0.01}, now)
    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(first) for first in range(CONCURRENT)))
    return (time.perf_counter() - began) / requests, (time.process_time() - cpu) / requests


def evalshas(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def main(requests: int, url: str) -> None:
    for name, plan in PLANS.items():
        print(line(f"memory {name}", await pairs(MemoryCounters(), requests, plan)))

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    store = RedisCounters(url, namespace=namespace)
    client = redis.Redis.from_url(url)
    sent = 0
    send = Connection.send_packed_command

    async def counted(self: Connection, command: Any, check_health: bool = True) -> None:
        nonlocal sent
        sent += 1
        await send(self, command, check_health)

    try:
        await pairs(store, BATCH)  # connect and load the script
        for name, plan in PLANS.items():
            print(line(f"redis client {name}", await client_side(store, requests, plan, False)))
            print(line(f"  + packing {name}", await client_side(store, requests, plan, True)))
        before = evalshas(client)
        Connection.send_packed_command = counted  # type: ignore[method-assign,assignment]
        try:
            shared = await pairs(store, requests, typical, time.perf_counter)
        finally:
            Connection.send_packed_command = send  # type: ignore[method-assign,assignment]
        server = evalshas(client) - before - 1  # this INFO's own request is not an EVALSHA
        print(line("redis typical", shared))
        print(f"redis round trips per request: {sent / requests:.2f} "
              f"(each settle rides with the next admission, as the gateway's do; server "
              f"saw {server / requests:.2f} EVALSHA per request)")
        print(line("redis quotas", await pairs(store, requests, quotas, time.perf_counter)))
        sent, before = 0, evalshas(client)
        Connection.send_packed_command = counted  # type: ignore[method-assign,assignment]
        try:
            wall, cpu = await concurrent(store, requests)
        finally:
            Connection.send_packed_command = send  # type: ignore[method-assign,assignment]
        server = evalshas(client) - before - 1
        print(f"{f'redis concurrent x{CONCURRENT}':<22} {wall * 1e6:8.1f} us per admit+settle "
              f"(wall time, {CONCURRENT} requests at once; CPU {cpu * 1e6:.1f} us)")
        print(f"redis round trips per request: {sent / requests:.2f} at {CONCURRENT} at once "
              f"(server saw {server / requests:.2f} EVALSHA per request)")
    finally:
        await store.close()
        for key in client.scan_iter(match="{" + namespace + "}:*"):
            client.delete(key)
        client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.url))
