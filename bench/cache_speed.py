"""How fast the semantic cache finds an entry, and what an entry costs in memory.

    python -m bench.cache_speed                  # 10k, 100k and 1M entries
    python -m bench.cache_speed --sizes 10k,100k

For each size, one partition of that many entries (1M: ten partitions of
100k, as a cache of many tenants holds them) with random unit vectors of the
hash embedder's width: the median and p99 time of a lookup without
embedding (the matrix product and the best candidates, what a request pays
once its message is embedded), the time to embed one message with each
embedder available, and the memory a stored entry takes (its row, and the
entry object with a small answer). Target (the cache issue): a lookup
without embedding in at most 1 ms at 100k entries in one partition.

    python -m bench.cache_speed --throughput     # needs nginx and wrk

The throughput bench's full policy (bench.overhead) with its cache block
matching every chat request, exact and semantic, against the same policy
with no cache block, in alternating rounds at 8 connections; every request
asks a question of its own, so each one is a miss: what the stage costs a
request it cannot answer (the key, the embedding, the lookup, keeping the
answer). Target: at most 10% of the throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import tempfile
import time
import tracemalloc
import uuid

import numpy as np

from bench.overhead import prepare
from bench.upstream import nginx
from bench.upstream_client import serving, wrk
from policies import embedders
from policies.cache_store import Entry, MemoryCache

SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}
PARTITION = 100_000  # the most one partition holds here; bigger sizes are split
LOOKUPS = 200
ANSWER = {"id": "x", "object": "chat.completion", "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "a short answer"},
                       "finish_reason": "stop"}]}


def filled(size: int, dimensions: int, rng: np.random.Generator) -> tuple[MemoryCache, int]:
    cache = MemoryCache(size)
    vectors = rng.standard_normal((size, dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    partitions = max(1, size // PARTITION)
    for i, vector in enumerate(vectors):
        cache.add(f"p{i % partitions}", vector,
                  Entry(ANSWER, "m", "p", 0.001, "team=t", float("inf"), f"question {i}"))
    return cache, partitions


def lookups(cache: MemoryCache, partitions: int, dimensions: int,
            rng: np.random.Generator) -> list[float]:
    seconds = []
    for i in range(LOOKUPS):
        vector = rng.standard_normal(dimensions).astype(np.float32)
        vector /= np.linalg.norm(vector)
        started = time.perf_counter()
        cache.nearest(f"p{i % partitions}", vector, 0.0)
        seconds.append(time.perf_counter() - started)
    return seconds


def entry_bytes(dimensions: int) -> float:
    """Bytes one entry adds: measured over 20k entries, matrix growth included."""
    rng = np.random.default_rng(1)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache, _ = filled(20_000, dimensions, rng)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(cache) == 20_000
    return used / 20_000


def embed_times() -> dict[str, float]:
    times = {}
    for name in embedders.NAMES:
        try:
            embedder = embedders.embedder(name)
        except embedders.EmbedderUnavailable:
            continue
        embedder.embed(["warm up"])
        started = time.perf_counter()
        for i in range(20):
            embedder.embed([f"How do I rotate the keys of service number {i}?"])
        times[name] = (time.perf_counter() - started) / 20
    return times


# every request its own question: wrk's Lua makes the body per request, from a count and
# this round's own nonce (each round is a new wrk, whose count and random numbers restart)
MISSES_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local body = '{"model":"m3","messages":[{"role":"user","content":"How do I rotate key '
    .. counter .. ' of service NONCE-' .. math.random(1, 1000000000) .. ' today?"}]}'
  return wrk.format(nil, nil, nil, body)
end
"""
ROUNDS, SECONDS = 5, 4


def throughput() -> None:
    with nginx(18961) as upstream, tempfile.TemporaryDirectory() as folder:
        path, database, headers = prepare(folder, upstream)
        with open(path) as source:
            plain = re.sub(r"^cache .*$", "", source.read(), flags=re.MULTILINE)
        variants = {"no cache": plain,
                    "exact": plain + 'cache when endpoint == "chat" { mode = exact }\n',
                    "semantic": plain + 'cache when endpoint == "chat" { mode = semantic }\n'}
        os.environ["GW_DB_URL"] = database
        with contextlib.ExitStack() as stack:
            urls = {}
            for port, (name, policy) in enumerate(variants.items(), start=18962):
                file = os.path.join(folder, f"{port}.gw")
                with open(file, "w") as out:
                    out.write(policy)
                log = stack.enter_context(open(os.path.join(folder, f"{port}.log"), "w"))
                urls[name] = stack.enter_context(serving(
                    ["compiler.cli", "serve", file, "--port", str(port)], port, stderr=log))
            rates: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(ROUNDS):
                for name, url in urls.items():
                    lua = MISSES_LUA.replace("NONCE", uuid.uuid4().hex)
                    rates[name].append(wrk(url, 8, SECONDS, headers=headers, lua=lua))
        base = statistics.median(rates["no cache"])
        print(f"throughput, every request a miss (req/s, wrk, 8 connections, median of "
              f"{ROUNDS} alternating rounds of {SECONDS} s)")
        for name, figures in rates.items():
            median = statistics.median(figures)
            print(f"  {name:<9} {median:7.0f}  ({median / base - 1:+.1%} against no cache)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10k,100k,1M")
    parser.add_argument("--throughput", action="store_true",
                        help="the cache stage's cost on a miss, through the gateway")
    arguments = parser.parse_args()
    if arguments.throughput:
        throughput()
        return
    sizes = [SIZES[s] for s in arguments.sizes.split(",")]
    dimensions = embedders.embedder("hash").dimensions
    rng = np.random.default_rng(7)
    print(f"lookup without embedding ({dimensions} floats a row, {LOOKUPS} lookups)")
    for size in sizes:
        cache, partitions = filled(size, dimensions, rng)
        seconds = lookups(cache, partitions, dimensions, rng)
        ordered = sorted(seconds)
        print(f"  {size:>9,} entries in {partitions} partition(s): median "
              f"{statistics.median(seconds) * 1e3:.3f} ms, p99 "
              f"{ordered[int(len(ordered) * 0.99) - 1] * 1e3:.3f} ms")
        del cache
    print(f"memory per entry: {entry_bytes(dimensions):,.0f} bytes")
    for name, each in embed_times().items():
        print(f"embedding one message, {name}: {each * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
