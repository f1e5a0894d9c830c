"""How fast the semantic cache finds an entry, and what an entry costs in memory.

    python -m bench.cache_speed                  # 10k, 100k and 1M entries
    python -m bench.cache_speed --sizes 10k,100k
    python -m bench.cache_speed --switch         # exact against indexed, around the switch
    python -m bench.cache_speed --exact          # the matrix alone at every size (before)

For each size, one partition of that many entries (1M: ten partitions of
100k, as a cache of many tenants holds them) with random unit vectors of the
hash embedder's width, added one by one as the cache adds them: the median
and p99 time of a lookup without embedding (what a request pays once its
message is embedded), the time an add takes, and the memory an entry takes
(the process's resident growth while filling: rows, index and the entry
object with a small answer). A partition reaching the switch trains its
index in a thread; the fill waits for it there, as a cache filling at the
pace of its misses would hardly notice (rows added while it trains are
filed together when it is done). Then recall@4 at 100k: how many of the
exact search's four best rows a lookup through the index returns, for
random queries over random rows (the hard case for any approximate index:
every row about as far as any other, and none near enough to be a hit) and
for paraphrase-like queries over clustered rows (groups of near neighbours,
as questions and their rewordings are), and the recall of the rows among
those four near enough to be a hit (similarity 0.8 or more), the figure
that decides hits. Last, the time to embed one message with each embedder
available. Target (the cache issue): a lookup without embedding in at most
1 ms at 100k entries in one partition.

`--switch` times both paths on the same rows at sizes around
`APPROXIMATE_FROM`, where the partition moves from exact search to its index.

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
import gc
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import orjson

from bench.overhead import prepare
from bench.upstream import nginx
from bench.upstream_client import serving, wrk
from policies import cache_store, embedders
from policies.cache_store import Entry, MemoryCache

SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}
PARTITION = 100_000  # the most one partition holds here; bigger sizes are split
LOOKUPS = 200
RECALL_QUERIES = 500
ANSWER = orjson.dumps({
    "id": "x", "object": "chat.completion", "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "a short answer"},
                 "finish_reason": "stop"}]})
PARAPHRASE = 0.35  # the noise that takes a row to a near neighbour: cosine about 0.89 between two
NEAR = 0.8  # a similarity a hit could have (the default thresholds are 0.85 and 0.86)


def unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    rows /= np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows


def random_rows(count: int, dimensions: int, rng: np.random.Generator) -> np.ndarray:
    return unit(rng.standard_normal((count, dimensions), dtype=np.float32))


def reworded(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A paraphrase-like neighbour of each row."""
    noise = rng.standard_normal(rows.shape, dtype=np.float32) * (PARAPHRASE / np.sqrt(
        rows.shape[1]))
    return unit(rows + noise)


def clustered_rows(count: int, dimensions: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Groups of five near neighbours (a question and its rewordings), and their centres."""
    centres = random_rows(max(1, count // 5), dimensions, rng)
    return reworded(centres[rng.integers(0, len(centres), count)], rng), centres


def resident() -> int:
    """This process's resident memory in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Filled:
    cache: MemoryCache
    partitions: int
    entries: list[Entry]
    add_seconds: list[float]
    bytes_each: float
    settling: float  # seconds waited for indexes training in their threads


def filled(vectors: np.ndarray) -> Filled:
    size = len(vectors)
    cache = MemoryCache(size)
    partitions = max(1, size // PARTITION)
    entries, seconds = [], []
    gc.collect()
    before = resident()
    settling = 0.0
    for i, vector in enumerate(vectors):
        entry = Entry(ANSWER, "m", "p", 0.001, "team=t", float("inf"), f"question {i}")
        name = f"p{i % partitions}"
        started = time.perf_counter()
        cache.add(name, vector, entry)
        seconds.append(time.perf_counter() - started)
        entries.append(entry)
        assert isinstance(cache.rows, cache_store.Partitions)
        partition = cache.rows.partitions[name]
        if partition.training is not None:  # a cache fills at the pace of its misses, not
            started = time.perf_counter()  # of this loop: wait as it trains, not after
            partition.settle()
            settling += time.perf_counter() - started
    return Filled(cache, partitions, entries, seconds, (resident() - before) / size, settling)


def lookups(cache: MemoryCache, partitions: int, dimensions: int,
            rng: np.random.Generator) -> list[float]:
    seconds = []
    for i in range(LOOKUPS):
        vector = random_rows(1, dimensions, rng)[0]
        started = time.perf_counter()
        cache.nearest(f"p{i % partitions}", vector, 0.0)
        seconds.append(time.perf_counter() - started)
    return seconds


def recall(fill: Filled, vectors: np.ndarray, queries: np.ndarray) -> tuple[float, float, str]:
    """Recall@4 of the cache's lookups against exact search over the same rows (one
    partition); the share of the exact four at similarity `NEAR` or more that are found
    (the rows a hit could be: the recall that decides hits); and how many those are."""
    assert fill.partitions == 1
    number = {id(entry): i for i, entry in enumerate(fill.entries)}
    found = near_found = near_rows = 0
    for query in queries:
        similarity = vectors @ query
        exact = np.argpartition(-similarity, 4)[:4]
        got = {number[id(entry)] for entry, _ in fill.cache.nearest("p0", query, 0.0)}
        found += len(set(exact.tolist()) & got)
        near = [i for i in exact.tolist() if similarity[i] >= NEAR]
        near_rows += len(near)
        near_found += len(set(near) & got)
    return (found / (4 * len(queries)), near_found / near_rows if near_rows else float("nan"),
            f"{near_rows:,}")


def milliseconds(seconds: list[float], share: float) -> str:
    ordered = sorted(seconds)
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1e3:.3f}"


def report(size: int, kind: str, fill: Filled, seconds: list[float]) -> None:
    adds = fill.add_seconds
    print(f"  {size:>9,} entries in {fill.partitions} partition(s), {kind}: lookup median "
          f"{statistics.median(seconds) * 1e3:.3f} ms, p99 {milliseconds(seconds, 0.99)} ms; "
          f"add mean {statistics.fmean(adds) * 1e6:.0f} us, p99 "
          f"{milliseconds(adds, 0.99)} ms, max {max(adds) * 1e3:.1f} ms; "
          f"{fill.bytes_each:,.0f} bytes/entry"
          + (f"; {fill.partitions} index(es) trained in threads in {fill.settling:.2f} s"
             if fill.settling > 0.001 else ""))


def sizes(names: str, dimensions: int, rng: np.random.Generator) -> None:
    switch_at = cache_store.APPROXIMATE_FROM
    print(f"lookup without embedding ({dimensions} floats a row, {LOOKUPS} lookups; " + (
        f"a partition is searched exactly below {switch_at:,} entries, through its index from "
        "there)" if switch_at < 10**12 else "exact search at every size)"))
    recalls = []
    for name in names.split(","):
        size = SIZES[name]
        vectors = random_rows(size, dimensions, rng)
        fill = filled(vectors)
        report(size, "random rows", fill, lookups(fill.cache, fill.partitions, dimensions, rng))
        if size == PARTITION:
            hard = recall(fill, vectors, random_rows(RECALL_QUERIES, dimensions, rng))
            recalls.append(("random rows, random queries", hard))
            del fill
            vectors, centres = clustered_rows(size, dimensions, rng)
            fill = filled(vectors)
            report(size, "clustered rows", fill,
                   lookups(fill.cache, fill.partitions, dimensions, rng))
            queries = reworded(centres[rng.integers(0, len(centres), RECALL_QUERIES)], rng)
            recalls.append(("clustered rows, paraphrase-like queries",
                            recall(fill, vectors, queries)))
        del fill, vectors
    for kind, (share, near, rows) in recalls:
        print(f"recall@4 against exact search at {PARTITION:,} entries, {kind}, "
              f"{RECALL_QUERIES} lookups: {share:.3f}; " + (
                  f"of the {rows} rows among the exact four at similarity {NEAR} or more: "
                  f"{near:.3f}" if rows != "0" else f"no row among them at {NEAR} or more"))


def switch(dimensions: int, rng: np.random.Generator) -> None:
    """Lookup time of both paths at sizes around the switch, on the same rows."""
    print(f"lookup median / p99 (ms) by partition size, {dimensions} floats a row, "
          f"{LOOKUPS} lookups (switch now at {cache_store.APPROXIMATE_FROM:,})")
    saved = cache_store.APPROXIMATE_FROM
    try:
        for size in (2_000, 4_000, 8_000, 10_000, 16_000, 32_000):
            vectors = random_rows(size, dimensions, rng)
            line = []
            for path, start in (("exact", 10**12), ("indexed", size)):
                cache_store.APPROXIMATE_FROM = start  # indexed: trained on all, at the last add
                fill = filled(vectors)
                seconds = lookups(fill.cache, 1, dimensions, rng)
                line.append(f"{path} {statistics.median(seconds) * 1e3:.3f} / "
                            f"{milliseconds(seconds, 0.99)}")
            print(f"  {size:>7,}: {', '.join(line)}; the index trained in {fill.settling:.2f} s "
                  f"(in a thread), the add that started it took "
                  f"{fill.add_seconds[-1] * 1e3:.1f} ms")
    finally:
        cache_store.APPROXIMATE_FROM = saved


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
# this wrk's own number, read from /dev/urandom (each wrk, the warm-up second the bench's
# wrk helper runs first included, starts its count and its random numbers anew)
MISSES_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local urandom = io.open("/dev/urandom", "rb")
local a, b, c, d = urandom:read(4):byte(1, 4)
urandom:close()
local run = ((a * 256 + b) * 256 + c) * 256 + d
counter = 0
request = function()
  counter = counter + 1
  local body = '{"model":"m3","messages":[{"role":"user","content":"How do I rotate key '
    .. counter .. ' of service ' .. run .. ' today?"}]}'
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
                    rates[name].append(wrk(url, 8, SECONDS, headers=headers, lua=MISSES_LUA))
        base = statistics.median(rates["no cache"])
        print(f"throughput, every request a miss (req/s, wrk, 8 connections, median of "
              f"{ROUNDS} alternating rounds of {SECONDS} s)")
        for name, figures in rates.items():
            median = statistics.median(figures)
            print(f"  {name:<9} {median:7.0f}  ({median / base - 1:+.1%} against no cache)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10k,100k,1M")
    parser.add_argument("--switch", action="store_true",
                        help="exact search against the index at sizes around the switch")
    parser.add_argument("--exact", action="store_true",
                        help="never switch to the index: exact search at every size")
    parser.add_argument("--throughput", action="store_true",
                        help="the cache stage's cost on a miss, through the gateway")
    arguments = parser.parse_args()
    if arguments.throughput:
        throughput()
        return
    dimensions = embedders.embedder("hash").dimensions
    rng = np.random.default_rng(7)
    if arguments.switch:
        switch(dimensions, rng)
        return
    if arguments.exact:
        cache_store.APPROXIMATE_FROM = 10**12
    sizes(arguments.sizes, dimensions, rng)
    for name, each in embed_times().items():
        print(f"embedding one message, {name}: {each * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
