"""Cached answers in Redis, shared by every replica, with a copy in each one's memory.

An exact entry is one Redis string, expiring with its TTL: a lookup is one
GET. A semantic partition is one Redis stream of entries with their vectors;
each replica keeps the partition's entries in its own `MemoryCache` (their
rows in its vector process) and, on a lookup, reads only the entries added
since its last (XRANGE from the last id it saw), so a lookup is one round trip
and the search stays in memory. A hit stored by one replica is found by the next lookup of any.

A flush deletes the keys and moves a generation number on; a replica that
sees the number move empties its copy, so a flushed entry is served nowhere.
A stream keeps at most `max_entries` (XADD MAXLEN ~) and expires a TTL after
its last entry; each entry's own expiry is checked when it is found.

Every call is bounded (`timeout`); a Redis that cannot answer makes a lookup
a miss and a write a no-op, with a warning in the log: a cache that cannot
be read only costs the upstream call it would have saved.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from policies.cache_store import CANDIDATES, CacheStore, Entry, MemoryCache
from policies.vector_process import VectorProcess

T = TypeVar("T")
logger = logging.getLogger("gwc")


class RedisCache(CacheStore):
    """One cache block's entries, in Redis under `{namespace}:cache:<block>:...`."""

    def __init__(self, client: aioredis.Redis, block: str, max_entries: int,
                 vectors: VectorProcess, namespace: str = "gw", timeout: float = 0.5) -> None:
        self.client, self.max_entries, self.timeout = client, max_entries, timeout
        self.prefix = "{" + namespace + "}:cache:"
        self.block = block
        self.vectors = vectors
        self.local = MemoryCache(max_entries, vectors)
        vectors.forget = self._forget
        self._seen: dict[str, str] = {}  # partition -> the last stream id read
        self._generation: bytes | None = None
        self._writes: set[asyncio.Task[Any]] = set()

    def resize(self, max_entries: int) -> None:
        self.max_entries = self.local.max_entries = max_entries

    async def get(self, key: str, scope: str, now: float) -> Entry | None:
        raw = await self._bounded(self.client.get(self._key(scope, "x", key)))
        if not raw:
            return None
        entry, _ = _entry(raw)
        return entry if entry.expires > now else None

    def put(self, key: str, entry: Entry, ttl: float) -> None:
        self._write(self.client.set(self._key(entry.scope, "x", key), _raw(entry, None),
                                    px=max(1, int(ttl * 1000))))

    async def nearest(self, partition: str, scope: str, text: str, vector: np.ndarray | None,
                      now: float, threshold: float | None
                      ) -> tuple[np.ndarray, list[tuple[Entry, float]]]:
        stream = self._key(scope, "s", partition)
        await self.vectors.start()  # rows read from the stream go to a running one
        for _ in range(2):  # a second read, from the start, when a flush emptied the copy
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(self.prefix + "generation")
                pipe.xrange(stream, "(" + self._seen.get(stream, "0-0"), "+")
                answers = await self._bounded(pipe.execute())
            if answers is None:
                return await self.vectors.search(stream, text, vector, 0)
            generation, added = answers
            if generation == self._generation:
                break
            self._generation = generation  # flushed since: what is held here is stale
            self.local.flush()
            self._seen.clear()
        for stream_id, fields in added:
            entry, row = _entry(fields[b"entry"])
            if row is not None and entry.expires > now:
                self.local.add(stream, row, entry)
            self._seen[stream] = stream_id.decode()
        found, hits = await self.vectors.search(stream, text, vector, CANDIDATES, threshold)
        return found, self.local.live(stream, hits, now)

    def add(self, partition: str, vector: np.ndarray, entry: Entry, ttl: float) -> None:
        stream = self._key(entry.scope, "s", partition)

        async def write() -> Any:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xadd(stream, {"entry": _raw(entry, vector)}, maxlen=self.max_entries,
                          approximate=True)
                pipe.pexpire(stream, max(1, int(ttl * 1000)))
                return await pipe.execute()
        self._write(write())

    def used(self, entry: Entry) -> None:
        self.local.used(entry)

    async def flush(self, scope: str | None) -> int:
        pattern = self.prefix + (f"{self.block}:{_scope(scope)}:*" if scope is not None
                                 else f"{self.block}:*")

        async def delete() -> int:
            count = 0
            async for key in self.client.scan_iter(match=pattern, count=500):
                count += await self.client.delete(key)
            await self.client.incr(self.prefix + "generation")
            return count
        gone = await self._bounded(delete(), 10 * self.timeout)
        self.local.flush(scope)
        return gone or 0

    async def close(self) -> None:
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=self.timeout * 4)
        await self.vectors.close()

    def _forget(self) -> None:
        """The vector process stopped: what it held is read from the streams again."""
        self.local.forget()
        self._seen.clear()

    def _key(self, scope: str, kind: str, name: str) -> str:
        return f"{self.prefix}{self.block}:{_scope(scope)}:{kind}:{name}"

    def _write(self, call: Awaitable[Any]) -> None:
        """A write off the request's path; its failure is logged, never raised."""
        task = asyncio.get_running_loop().create_task(self._bounded(call))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _bounded(self, call: Awaitable[T], timeout: float | None = None) -> T | None:
        try:
            async with asyncio.timeout(timeout or self.timeout):
                return await call
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("gwc: the shared cache did not answer (%s): a miss",
                           type(exc).__name__)
            return None


def _scope(scope: str) -> str:
    """A scope subject in a key's name: a digest, since a name may hold any byte."""
    return hashlib.blake2b(scope.encode(), digest_size=8).hexdigest()


def _raw(entry: Entry, vector: np.ndarray | None) -> bytes:
    return orjson.dumps({
        "answer": orjson.Fragment(entry.answer), "model": entry.model, "provider": entry.provider,
        "cost": entry.cost, "scope": entry.scope, "expires": entry.expires, "text": entry.text,
        "vector": None if vector is None else base64.b64encode(
            np.asarray(vector, dtype=np.float32).tobytes()).decode()})


def _entry(raw: bytes | str) -> tuple[Entry, np.ndarray | None]:
    data = orjson.loads(raw)
    vector = None if data["vector"] is None else np.frombuffer(
        base64.b64decode(data["vector"]), dtype=np.float32)
    return Entry(orjson.dumps(data["answer"]), data["model"], data["provider"], data["cost"],
                 data["scope"], data["expires"], data["text"]), vector
