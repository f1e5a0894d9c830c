"""Cached answers in this process's memory: exact entries by key, semantic ones by vector.

An exact entry is found by its key, a digest of the whole request. A
semantic one lives in a partition (a digest of everything but the last
user message). A small partition is one float32 matrix, a row an entry, so a
lookup is one matrix-vector product: exact search, nothing to tune. That
reads every row, so its time grows with the partition (0.17 ms for ten
thousand 512-float rows, 15 ms for a hundred thousand, memory-bound); from
`APPROXIMATE_FROM` entries, where the two cost the same, a partition is
searched through an approximate index instead (`policies.cache_index`,
faiss's inverted file: 0.07 ms at ten thousand, under a millisecond at a
hundred thousand), its candidates re-scored exactly. Rows are L2-normalised by the
embedder, so either way the product is the cosine similarity.

Both kinds expire (`ttl`, checked when found) and share one LRU order:
past `max_entries` the entry used least recently goes, whatever its kind.
A partition's removed row is filled by its last one, so matrices stay
contiguous and a lookup never scans holes. Nothing here reads a clock; every
call takes the caller's `now`.
"""

from __future__ import annotations

import abc
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# faiss loads with this module, not in the first training thread: loading a native
# library holds the interpreter lock, so a late import would stall the searches
from policies.cache_index import LISTS, ApproximateIndex, lists_for

CANDIDATES = 4  # semantic candidates a search reads, best first, for the lexical guard
APPROXIMATE_FROM = 4_000  # entries from which a partition is searched by an index (measured)
OVERSAMPLE = 32  # candidates the index proposes for the matrix to re-score


@dataclass(slots=True, eq=False)
class Entry:
    """One stored answer and what a hit needs of it."""

    # the answer as its client got it, as JSON: bytes hold no objects for the collector
    # to trace, where a cache full of dicts made each of its full passes take 75 ms
    answer: bytes
    model: str  # the model that answered
    provider: str
    cost: float  # what it cost when fetched: the spend a hit saves
    scope: str  # whose it is ("team=research"), for a flush of one subject
    expires: float
    text: str = ""  # semantic: the message it answered, for the lexical guard
    guard: Any = None  # the guard's reading of `text`, made once
    # where it is held: the exact key, or the partition (None: exact) and its row or label
    key: str = field(default="", repr=False)
    partition: str | None = field(default=None, repr=False)
    row: int = field(default=-1, repr=False)  # in the partition's matrix
    # in its approximate index, if in one; in the gateway, its row's in the vector process
    label: int = field(default=-1, repr=False)


class Training:
    """A partition's index trained and filled in a thread, on a copy of its rows.

    faiss lets go of the interpreter while it trains, so lookups and adds go
    on meanwhile (exactly, on the matrix); the partition takes the index on
    the first call that finds the thread done.
    """

    __slots__ = ("boundary", "failed", "index", "thread")

    def __init__(self, rows: np.ndarray, labels: np.ndarray, boundary: int) -> None:
        self.boundary = boundary  # the labels it holds are below this
        self.index: ApproximateIndex | None = None
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(rows, labels), daemon=True,
                                       name="gwc-cache-index")
        self.thread.start()

    def _run(self, rows: np.ndarray, labels: np.ndarray) -> None:
        try:
            index = ApproximateIndex(rows)
            index.add(labels, rows)
            self.index = index
        except BaseException as exc:  # handed to the partition's thread, which raises it
            self.failed = exc


class Partition:
    """The rows of one partition and their entries: a matrix, and an index once it is large.

    The float32 matrix holds every row, an entry's at `entry.row`, and decides
    every similarity. A partition of fewer than `APPROXIMATE_FROM` entries is
    searched exactly, one product over the matrix. When it reaches that size,
    an approximate index (`policies.cache_index`) is trained on a copy of its
    rows in a thread (`Training`), each row under its entry's label; once it
    is done the partition takes it, drops from it the rows removed meanwhile
    and files the ones added, and from then on files each row as it comes.
    An index has centres for the rows it was trained on; when the partition
    has grown to twice them (up to `cache_index.LISTS`), a new one is trained
    the same way while the old one serves. The index proposes `OVERSAMPLE`
    candidates and the matrix re-scores them, so a similarity is the true
    cosine whichever path found the row. Below a quarter of `APPROXIMATE_FROM`
    the index is dropped.
    """

    __slots__ = ("dropped", "entries", "index", "labelled", "next_label", "training",
                 "vectors")

    def __init__(self, dimensions: int) -> None:
        self.vectors = np.empty((8, dimensions), dtype=np.float32)
        self.entries: list[Entry] = []  # row by row
        self.index: ApproximateIndex | None = None
        self.training: Training | None = None
        self.labelled: dict[int, Entry] = {}  # the index's entries (or its training's)
        self.dropped: list[int] = []  # labels removed while the index trained
        self.next_label = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, vector: np.ndarray, entry: Entry) -> None:
        size = len(self.entries)
        if size == len(self.vectors):
            grown = np.empty((2 * size, self.vectors.shape[1]), dtype=np.float32)
            grown[:size] = self.vectors
            self.vectors = grown
        self.vectors[size] = vector
        entry.row = size
        self.entries.append(entry)
        if self.index is not None:
            self._file([entry])
        if self.training is not None:
            self._take_index()
        elif size + 1 >= APPROXIMATE_FROM and (self.index is None or self._outgrown()):
            self._train()

    def remove(self, entry: Entry) -> None:
        if entry.label >= 0:
            if self.index is not None:
                self.index.remove(entry.label)
            if self.training is not None:
                self.dropped.append(entry.label)  # from the new index once it is taken
            del self.labelled[entry.label]
            entry.label = -1
        last = self.entries.pop()
        if last is not entry:  # the last row fills the hole
            self.vectors[entry.row] = self.vectors[len(self.entries)]
            last.row = entry.row
            self.entries[entry.row] = last
        entry.row = -1
        if (self.index is not None or self.training is not None) \
                and len(self.entries) < APPROXIMATE_FROM // 4:
            for held in self.entries:
                held.label = -1
            self.index, self.training, self.labelled, self.dropped = None, None, {}, []

    def nearest(self, vector: np.ndarray, count: int) -> list[tuple[Entry, float]]:
        if self.training is not None:
            self._take_index()
        size = len(self.entries)
        if not size:
            return []
        rows = None
        if self.index is None:
            similarity = self.vectors[:size] @ vector
        else:  # the index's candidates, re-scored against their rows
            labelled = self.labelled
            rows = np.array([labelled[label].row for label in
                             self.index.candidates(vector, max(count, OVERSAMPLE))],
                            dtype=np.intp)
            similarity = self.vectors[rows] @ vector
        if len(similarity) > count:
            best = np.argpartition(similarity, len(similarity) - count)[-count:]
            best = best[np.argsort(-similarity[best])]
        else:
            best = np.argsort(-similarity)
        found = best if rows is None else rows[best]
        return [(self.entries[row], float(s))
                for row, s in zip(found.tolist(), similarity[best].tolist(), strict=True)]

    def settle(self) -> None:
        """Wait for the index being trained, if one is, and take it."""
        if self.training is not None:
            self.training.thread.join()
            self._take_index()

    def _outgrown(self) -> bool:
        """Whether the rows would now train twice the index's centres (or all it may have):
        a list read by a lookup holds more rows as a partition grows, centres stay."""
        assert self.index is not None
        lists = self.index.lists
        return lists < lists_for(len(self.entries)) >= min(LISTS, 2 * lists)

    def _train(self) -> None:
        """Train an index on a copy of the rows, in a thread: the first, or one with
        more centres for a partition that has grown (the old one serves meanwhile)."""
        if self.index is None:
            self._label(self.entries)
        labels = np.array([held.label for held in self.entries], dtype=np.int64)
        self.training = Training(self.vectors[:len(self.entries)].copy(), labels,
                                 self.next_label)

    def _take_index(self) -> None:
        training = self.training
        assert training is not None
        if training.thread.is_alive():
            return
        self.training, dropped, self.dropped = None, self.dropped, []
        if training.failed is not None:
            if self.index is None:  # the matrix goes on alone; a grown one keeps its index
                for held in self.entries:
                    held.label = -1
                self.labelled = {}
            raise RuntimeError("the cache could not train a partition's index") \
                from training.failed
        index = training.index
        assert index is not None
        for label in dropped:  # removed while it trained (one it never had is no matter)
            index.remove(label)
        # added while it trained: unlabelled before a first index, in the old one after
        late = [held for held in self.entries if not 0 <= held.label < training.boundary]
        self._label([held for held in late if held.label < 0])
        if late:
            index.add(np.array([held.label for held in late], dtype=np.int64),
                      self.vectors[[held.row for held in late]])
        self.index = index

    def _label(self, entries: list[Entry]) -> np.ndarray:
        labels = np.arange(self.next_label, self.next_label + len(entries), dtype=np.int64)
        self.next_label += len(entries)
        for label, entry in zip(labels.tolist(), entries, strict=True):
            entry.label = label
            self.labelled[label] = entry
        return labels

    def _file(self, entries: list[Entry]) -> None:
        """Put the rows of `entries` in the index, under new labels."""
        assert self.index is not None
        if entries:
            rows = self.vectors[[entry.row for entry in entries]]
            self.index.add(self._label(entries), rows)


class Rows(Protocol):
    """Where a `MemoryCache` keeps its semantic entries' rows: `Partitions` in this
    process, or a `vector_process.VectorProcess`, which its owner searches."""

    def add(self, partition: str, vector: np.ndarray, entry: Entry) -> bool:
        """Whether `entry` has a row now (a vector process that is down has none)."""

    def remove(self, partition: str, entry: Entry) -> None: ...


class Partitions:
    """Semantic rows in this process: a `Partition` each, made by its first row."""

    def __init__(self) -> None:
        self.partitions: dict[str, Partition] = {}

    def add(self, partition: str, vector: np.ndarray, entry: Entry) -> bool:
        rows = self.partitions.get(partition)
        if rows is None:
            rows = self.partitions[partition] = Partition(len(vector))
        rows.add(vector, entry)
        return True

    def remove(self, partition: str, entry: Entry) -> None:
        rows = self.partitions[partition]
        rows.remove(entry)
        if not rows.entries:
            del self.partitions[partition]

    def nearest(self, partition: str, vector: np.ndarray,
                count: int) -> list[tuple[Entry, float]]:
        rows = self.partitions.get(partition)
        return [] if rows is None else rows.nearest(vector, count)


class MemoryCache:
    """One cache block's entries in this process (their rows, maybe in another)."""

    def __init__(self, max_entries: int, rows: Rows | None = None) -> None:
        self.max_entries = max_entries
        self.rows = rows if rows is not None else Partitions()
        self._exact: dict[str, Entry] = {}
        # LRU first; the entries themselves (each knows its partition), not tuples of an
        # entry and its partition: a full cache is then half the objects the collector's
        # full passes visit (10k, not 20k)
        self._order: OrderedDict[int, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def get(self, key: str, now: float) -> Entry | None:
        entry = self._exact.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            self._drop(entry)
            return None
        self._order.move_to_end(id(entry))
        return entry

    def put(self, key: str, entry: Entry) -> None:
        old = self._exact.get(key)
        if old is not None:
            self._drop(old)
        entry.key, entry.partition = key, None
        self._exact[key] = entry
        self._remember(entry)

    def nearest(self, partition: str, vector: np.ndarray, now: float,
                count: int = CANDIDATES) -> list[tuple[Entry, float]]:
        """The partition's entries most like `vector`, best first; expired ones go."""
        assert isinstance(self.rows, Partitions)  # a vector process is searched by its owner
        return self.live(partition, self.rows.nearest(partition, vector, count), now)

    def live(self, partition: str, found: list[tuple[Entry, float]],
             now: float) -> list[tuple[Entry, float]]:
        """Those of a search's `found` that have not expired; the others go."""
        live = [(entry, similarity) for entry, similarity in found if entry.expires > now]
        if len(live) < len(found):
            for entry, _ in found:
                if entry.expires <= now:
                    self._drop(entry)
        return live

    def used(self, entry: Entry) -> None:
        """A semantic hit: its entry is the most recently used."""
        if id(entry) in self._order:
            self._order.move_to_end(id(entry))

    def add(self, partition: str, vector: np.ndarray, entry: Entry) -> None:
        if self.rows.add(partition, vector, entry):  # else it could never be found
            entry.partition = partition
            self._remember(entry)

    def forget(self) -> None:
        """Every semantic entry gone, with no word to `rows`: they went with a vector
        process that stopped."""
        for key, entry in list(self._order.items()):
            if entry.partition is not None:
                del self._order[key]

    def flush(self, scope: str | None = None) -> int:
        """Drop every entry, or those of one scope subject; how many went."""
        gone = [entry for entry in self._order.values()
                if scope is None or entry.scope == scope]
        for entry in gone:
            self._drop(entry)
        return len(gone)

    def entries(self) -> Iterator[Entry]:
        return iter(self._order.values())

    def _remember(self, entry: Entry) -> None:
        self._order[id(entry)] = entry
        while len(self._order) > self.max_entries:
            self._drop(next(iter(self._order.values())))

    def _drop(self, entry: Entry) -> None:
        if self._order.pop(id(entry), None) is None:
            return
        if entry.partition is None:
            self._exact.pop(entry.key, None)
            return
        self.rows.remove(entry.partition, entry)


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
    async def nearest(self, partition: str, scope: str, text: str, vector: np.ndarray | None,
                      now: float, threshold: float | None
                      ) -> tuple[np.ndarray, list[tuple[Entry, float]]]:
        """The vector of `text` (embedded by the store's vector process unless given),
        and the partition's live entries most like it, best first: with a
        `threshold`, only hits (at it or above, and passed by the lexical guard)."""

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
