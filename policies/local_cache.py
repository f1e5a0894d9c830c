"""Cached answers in this process only: `MemoryCache` behind the store's face.

A semantic block's rows are searched in its vector process
(`policies.vector_process`), off the event loop; the answers stay here.
"""

from __future__ import annotations

import numpy as np

from policies.cache_store import CANDIDATES, CacheStore, Entry, MemoryCache
from policies.vector_process import VectorProcess


class LocalCache(CacheStore):
    """A block's entries in this process's memory; a semantic block's rows in its
    vector process."""

    def __init__(self, max_entries: int, vectors: VectorProcess | None = None) -> None:
        self.memory = MemoryCache(max_entries, vectors)
        self.vectors = vectors
        if vectors is not None:
            vectors.forget = self.memory.forget

    def resize(self, max_entries: int) -> None:
        self.memory.max_entries = max_entries

    async def get(self, key: str, scope: str, now: float) -> Entry | None:
        return self.memory.get(key, now)

    def put(self, key: str, entry: Entry, ttl: float) -> None:
        self.memory.put(key, entry)

    async def nearest(self, partition: str, scope: str, text: str, vector: np.ndarray | None,
                      now: float, threshold: float | None
                      ) -> tuple[np.ndarray, list[tuple[Entry, float]]]:
        assert self.vectors is not None, "an exact block has no semantic entries"
        found, hits = await self.vectors.search(partition, text, vector, CANDIDATES, threshold)
        return found, self.memory.live(partition, hits, now)

    def add(self, partition: str, vector: np.ndarray, entry: Entry, ttl: float) -> None:
        self.memory.add(partition, vector, entry)

    def used(self, entry: Entry) -> None:
        self.memory.used(entry)

    async def flush(self, scope: str | None) -> int:
        return self.memory.flush(scope)

    async def close(self) -> None:
        if self.vectors is not None:
            await self.vectors.close()
