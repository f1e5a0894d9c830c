"""Cached answers in this process's memory: exact entries by key, semantic ones by vector.

An exact entry is found by its key, a digest of the whole request. A
semantic one lives in a partition (a digest of everything but the last
user message) as one row of the partition's float32 matrix, so a lookup is
one matrix-vector product over the partition: exact search, no index to
tune, about a millisecond for a hundred thousand 256-float rows. Rows are
L2-normalised by the embedder, so the product is the cosine similarity.

Both kinds expire (`ttl`, checked when found) and share one LRU order:
past `max_entries` the entry used least recently goes, whatever its kind.
A partition's removed row is filled by its last one, so matrices stay
contiguous and a lookup never scans holes. Nothing here reads a clock; every
call takes the caller's `now`.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CANDIDATES = 4  # semantic candidates handed back, best first, for the caller's lexical guard


@dataclass(slots=True, eq=False)
class Entry:
    """One stored answer and what a hit needs of it."""

    answer: dict[str, Any]  # the answer as its client got it
    model: str  # the model that answered
    provider: str
    cost: float  # what it cost when fetched: the spend a hit saves
    scope: str  # whose it is ("team=research"), for a flush of one subject
    expires: float
    text: str = ""  # semantic: the message it answered, for the lexical guard
    guard: Any = None  # the guard's reading of `text`, made once
    # where it is held: the exact key, or the partition and its row
    key: str = field(default="", repr=False)
    row: int = field(default=-1, repr=False)


class Partition:
    """The rows of one partition: a matrix that doubles as it fills, and its entries."""

    __slots__ = ("entries", "vectors")

    def __init__(self, dimensions: int) -> None:
        self.vectors = np.empty((8, dimensions), dtype=np.float32)
        self.entries: list[Entry] = []

    def add(self, vector: np.ndarray, entry: Entry) -> None:
        size = len(self.entries)
        if size == len(self.vectors):
            grown = np.empty((2 * size, self.vectors.shape[1]), dtype=np.float32)
            grown[:size] = self.vectors
            self.vectors = grown
        self.vectors[size] = vector
        entry.row = size
        self.entries.append(entry)

    def remove(self, entry: Entry) -> None:
        last = self.entries.pop()
        if last is not entry:  # the last row fills the hole
            self.vectors[entry.row] = self.vectors[len(self.entries)]
            last.row = entry.row
            self.entries[entry.row] = last
        entry.row = -1

    def nearest(self, vector: np.ndarray, count: int) -> list[tuple[Entry, float]]:
        size = len(self.entries)
        if not size:
            return []
        similarity = self.vectors[:size] @ vector
        if size > count:
            best = np.argpartition(similarity, size - count)[size - count:]
            best = best[np.argsort(-similarity[best])]
        else:
            best = np.argsort(-similarity)
        return [(self.entries[i], float(similarity[i])) for i in best]


class MemoryCache:
    """One cache block's entries in this process."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._exact: dict[str, Entry] = {}
        self._partitions: dict[str, Partition] = {}
        self._order: OrderedDict[int, tuple[Entry, str | None]] = OrderedDict()  # LRU first

    def __len__(self) -> int:
        return len(self._order)

    def get(self, key: str, now: float) -> Entry | None:
        entry = self._exact.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            self._drop(entry, None)
            return None
        self._order.move_to_end(id(entry))
        return entry

    def put(self, key: str, entry: Entry) -> None:
        old = self._exact.get(key)
        if old is not None:
            self._drop(old, None)
        entry.key = key
        self._exact[key] = entry
        self._remember(entry, None)

    def nearest(self, partition: str, vector: np.ndarray, now: float,
                count: int = CANDIDATES) -> list[tuple[Entry, float]]:
        """The partition's entries most like `vector`, best first; expired ones go."""
        rows = self._partitions.get(partition)
        if rows is None:
            return []
        found = rows.nearest(vector, count)
        live = [(entry, similarity) for entry, similarity in found if entry.expires > now]
        if len(live) < len(found):
            for entry, _ in found:
                if entry.expires <= now:
                    self._drop(entry, partition)
        return live

    def used(self, entry: Entry) -> None:
        """A semantic hit: its entry is the most recently used."""
        if id(entry) in self._order:
            self._order.move_to_end(id(entry))

    def add(self, partition: str, vector: np.ndarray, entry: Entry) -> None:
        rows = self._partitions.get(partition)
        if rows is None:
            rows = self._partitions[partition] = Partition(len(vector))
        rows.add(vector, entry)
        self._remember(entry, partition)

    def flush(self, scope: str | None = None) -> int:
        """Drop every entry, or those of one scope subject; how many went."""
        gone = [(entry, partition) for entry, partition in self._order.values()
                if scope is None or entry.scope == scope]
        for entry, partition in gone:
            self._drop(entry, partition)
        return len(gone)

    def entries(self) -> Iterator[Entry]:
        return (entry for entry, _ in self._order.values())

    def _remember(self, entry: Entry, partition: str | None) -> None:
        self._order[id(entry)] = (entry, partition)
        while len(self._order) > self.max_entries:
            oldest, where = next(iter(self._order.values()))
            self._drop(oldest, where)

    def _drop(self, entry: Entry, partition: str | None) -> None:
        if self._order.pop(id(entry), None) is None:
            return
        if partition is None:
            self._exact.pop(entry.key, None)
            return
        rows = self._partitions[partition]
        rows.remove(entry)
        if not rows.entries:
            del self._partitions[partition]


class CacheStore(abc.ABC):
    """Where one cache block's entries live: this process's memory, or Redis."""

    @abc.abstractmethod
    def resize(self, max_entries: int) -> None:
        """Keep at most this many entries from now on (a reload may change it)."""

    @abc.abstractmethod
    async def get(self, key: str, scope: str, now: float) -> Entry | None:
        """The live exact entry under `key`."""

    @abc.abstractmethod
    def put(self, key: str, entry: Entry, ttl: float) -> None:
        """Keep an exact entry (off the request's path, for a shared store)."""

    @abc.abstractmethod
    async def nearest(self, partition: str, scope: str, vector: np.ndarray,
                      now: float) -> list[tuple[Entry, float]]:
        """The partition's live entries most like `vector`, best first."""

    @abc.abstractmethod
    def add(self, partition: str, vector: np.ndarray, entry: Entry, ttl: float) -> None:
        """Keep a semantic entry."""

    @abc.abstractmethod
    def used(self, entry: Entry) -> None:
        """A semantic hit: its entry is the most recently used."""

    @abc.abstractmethod
    async def flush(self, scope: str | None) -> int:
        """Drop every entry, or one scope subject's; how many went."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish what is being written."""


class LocalCache(CacheStore):
    """A block's entries in this process only: `MemoryCache` behind the store's face."""

    def __init__(self, max_entries: int) -> None:
        self.memory = MemoryCache(max_entries)

    def resize(self, max_entries: int) -> None:
        self.memory.max_entries = max_entries

    async def get(self, key: str, scope: str, now: float) -> Entry | None:
        return self.memory.get(key, now)

    def put(self, key: str, entry: Entry, ttl: float) -> None:
        self.memory.put(key, entry)

    async def nearest(self, partition: str, scope: str, vector: np.ndarray,
                      now: float) -> list[tuple[Entry, float]]:
        return self.memory.nearest(partition, vector, now)

    def add(self, partition: str, vector: np.ndarray, entry: Entry, ttl: float) -> None:
        self.memory.add(partition, vector, entry)

    def used(self, entry: Entry) -> None:
        self.memory.used(entry)

    async def flush(self, scope: str | None) -> int:
        return self.memory.flush(scope)

    async def close(self) -> None:
        return None
