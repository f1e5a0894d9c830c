"""Time per request for the quota and budget counters, and Redis round trips.

    python -m bench.limits                    # 2,000 requests, local Redis db 15
    python -m bench.limits --requests 5000 --url redis://127.0.0.1:6379/15

A request is one admit (a requests and a tokens quota, a slot, two budgets:
a typical plan) and its settle, one after the other on one connection. The
figure is the median over batches of the time per admit+settle pair. Round
trips are counted on the client, as the commands redis-py writes to the socket
while the batches run, and divided by the requests; the server's EVALSHA count
is printed beside it. The namespace is a fresh one, deleted after.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import redis
from redis.asyncio.connection import Connection

from policies.limits import CounterStore, Limit
from policies.memory_counters import MemoryCounters
from policies.redis_counters import RedisCounters

NOW = 1_800_000_000.0
BATCH = 100


def plan(i: int) -> list[Limit]:
    team = f"team-{i % 8}"
    return [
        Limit(f"q1:requests:{team}", "requests", 1e9, window=60),
        Limit(f"q1:tokens:{team}", "tokens", 1e12, window=60, cost=1200),
        Limit(f"q2:concurrency:{team}", "concurrency", 1e6),
        Limit(f"b1:{team}", "budget", 1e9, period="month", cost=0.02),
        Limit("b2:org", "budget", 1e9, period="day", cost=0.02),
    ]


async def pairs(store: CounterStore, requests: int) -> list[float]:
    """Seconds per admit+settle pair, one figure per batch of BATCH requests."""
    samples = []
    for start in range(0, requests, BATCH):
        began = time.perf_counter()
        for i in range(start, start + BATCH):
            now = NOW + i / 1000
            answer = await store.admit(plan(i), now, 60)
            assert answer.admitted and answer.reservation is not None
            await store.settle(answer.reservation, {f"q1:tokens:team-{i % 8}": 900,
                                                    f"b1:team-{i % 8}": 0.01}, now)
        samples.append((time.perf_counter() - began) / BATCH)
    return samples


def evalshas(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def main(requests: int, url: str) -> None:
    memory = await pairs(MemoryCounters(), requests)
    print(f"memory: {statistics.median(memory) * 1e6:8.1f} us per admit+settle (median)")

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
        before = evalshas(client)
        Connection.send_packed_command = counted  # type: ignore[method-assign,assignment]
        try:
            shared = await pairs(store, requests)
        finally:
            Connection.send_packed_command = send  # type: ignore[method-assign,assignment]
        server = evalshas(client) - before - 1  # this INFO's own request is not an EVALSHA
        print(f"redis:  {statistics.median(shared) * 1e6:8.1f} us per admit+settle (median)")
        print(f"redis round trips per request: {sent / requests:.2f} "
              f"(admit 1 + settle 1; server saw {server / requests:.2f} EVALSHA per request)")
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
