"""The semantic cache's store: exact and approximate partitions, LRU and TTL, held to models.

Most tests move the switch to the approximate index (`APPROXIMATE_FROM`) down
to a few dozen entries, so both paths run on small data; one fills a
partition past the real switch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import cache_index, cache_store
from policies.cache_store import Entry, MemoryCache, Partition

EXACT, APPROXIMATE = 10**9, 48  # switch points: never, and after a few dozen entries


@contextmanager
def switching_at(size: int) -> Iterator[None]:
    saved = cache_store.APPROXIMATE_FROM
    cache_store.APPROXIMATE_FROM = size
    try:
        yield
    finally:
        cache_store.APPROXIMATE_FROM = saved


@pytest.fixture(params=[EXACT, APPROXIMATE], ids=["exact", "approximate"])
def switch(request: pytest.FixtureRequest) -> Iterator[int]:
    with switching_at(request.param):
        yield request.param


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, clusters: int, each: int,
              dimensions: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """`clusters * each` rows around random centres (a paraphrase's distance), and the centres."""
    centres = unit(rng.standard_normal((clusters, dimensions)))
    noise = 0.35 / np.sqrt(dimensions)
    rows = np.repeat(centres, each, axis=0) + noise * rng.standard_normal(
        (clusters * each, dimensions))
    return unit(rows[rng.permutation(len(rows))]), centres


def entry(name: str, expires: float = float("inf"), scope: str = "team=t") -> Entry:
    return Entry(b'{"id": 1}', "m", "p", 0.001, scope, expires, name)


def filled(vectors: np.ndarray) -> tuple[Partition, list[Entry]]:
    """A partition of these rows, its index (if it has one) trained and taken."""
    partition, entries = Partition(vectors.shape[1]), []
    for i, vector in enumerate(vectors):
        entries.append(entry(str(i)))
        partition.add(vector, entries[-1])
    partition.settle()
    return partition, entries


def consistent(partition: Partition) -> None:
    """Each entry where it says it is: its row in the matrix, its label in the index
    (or in the index being trained, which has the rows it was started with)."""
    for row, held in enumerate(partition.entries):
        assert held.row == row
        assert held.label < 0 or partition.labelled[held.label] is held
    labels = sum(held.label >= 0 for held in partition.entries)
    assert labels == len(partition.labelled)
    if partition.index is not None:
        assert labels == len(partition) == len(partition.index)
    elif partition.training is None:
        assert labels == 0 and not partition.dropped


def partitions(cache: MemoryCache) -> dict[str, Partition]:
    assert isinstance(cache.rows, cache_store.Partitions)
    return cache.rows.partitions


def settled(cache: MemoryCache) -> MemoryCache:
    """The cache once its partitions' indexes, if any are training, are taken."""
    for partition in partitions(cache).values():
        partition.settle()
    return cache


def best(partition: Partition, vector: np.ndarray) -> Entry:
    return partition.nearest(vector, cache_store.CANDIDATES)[0][0]


def test_exact_and_approximate_partitions_agree_on_the_best_entry_of_clustered_data(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_index, "PROBES", 4)  # of 41 lists: a tenth of the rows read
    rng = np.random.default_rng(3)
    rows, centres = clustered(rng, 500, 8)
    with switching_at(EXACT):
        exact, _ = filled(rows)
    with switching_at(1600):
        approximate, _ = filled(rows)
    assert exact.index is None and approximate.index is not None
    queries = unit(centres[rng.integers(0, len(centres), 400)]
                   + 0.35 / 8 * rng.standard_normal((400, 64)))
    agree = 0
    for query in queries:
        wanted = exact.nearest(query, 4)
        found = approximate.nearest(query, 4)
        agree += found[0][0].text == wanted[0][0].text
        for one, similarity in found:  # the true cosines, best first, none past the exact best
            assert similarity == pytest.approx(float(rows[int(one.text)] @ query), abs=1e-6)
            assert similarity <= wanted[0][1] + 1e-6
        assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert agree >= 0.98 * len(queries)  # approximate: 397 of 400 here


def test_similarities_are_the_exact_cosines_of_the_stored_rows(switch: int) -> None:
    rng = np.random.default_rng(4)
    rows = unit(rng.standard_normal((200, 32)))
    partition, _ = filled(rows)
    for query in unit(rng.standard_normal((50, 32))):
        for found, similarity in partition.nearest(query, 4):
            assert similarity == pytest.approx(float(rows[int(found.text)] @ query), abs=1e-6)


def test_a_removed_entry_is_never_found_and_the_others_still_are(switch: int) -> None:
    rng = np.random.default_rng(5)
    rows = unit(rng.standard_normal((150, 32)))
    partition, entries = filled(rows)
    gone = set(rng.choice(150, 60, replace=False).tolist())
    for i in gone:
        partition.remove(entries[i])
    assert len(partition) == 90
    for i, row in enumerate(rows):
        names = [found.text for found, _ in partition.nearest(row, 4)]
        assert str(i) not in names if i in gone else names[0] == str(i)


def test_the_switch_to_the_index_and_back_keeps_every_entry_findable() -> None:
    rng = np.random.default_rng(6)
    rows = unit(rng.standard_normal((400, 32)))
    with switching_at(64):
        partition = Partition(32)
        entries: list[Entry] = []
        for i, row in enumerate(rows):
            entries.append(entry(str(i)))
            partition.add(row, entries[-1])
            if i < 100 or i % 20 == 0:  # through the switch and on
                consistent(partition)
                assert all(best(partition, rows[j]) is entries[j] for j in range(i + 1))
        partition.settle()
        consistent(partition)
        assert partition.index is not None and len(partition.index) == 400
        for i in range(400):  # down past a quarter of the switch: back to the matrix
            partition.remove(entries[i])
            if i % 25 == 0 or i > 380:
                consistent(partition)
                assert all(best(partition, rows[j]) is entries[j] for j in range(i + 1, 400))
            assert (partition.index is None) == (399 - i < 64 // 4)
        assert len(partition) == 0


def test_removing_and_adding_in_turn_keeps_rows_and_labels_straight(switch: int) -> None:
    rng = np.random.default_rng(12)
    rows = unit(rng.standard_normal((300, 32)))
    partition, entries = filled(rows[:100])
    live = set(range(100))
    for i in range(100, 300):  # an LRU cache's life: one in, one out
        entries.append(entry(str(i)))
        partition.add(rows[i], entries[-1])
        gone = int(rng.choice(sorted(live)))
        partition.remove(entries[gone])
        live = (live | {i}) - {gone}
        consistent(partition)
    partition.settle()
    consistent(partition)
    assert (partition.index is not None) == (switch == APPROXIMATE)
    assert all(best(partition, rows[i]) is entries[i] for i in live)
    assert all(entries[i].row == entries[i].label == -1 for i in range(300) if i not in live)


def test_while_the_index_trains_the_matrix_answers_and_what_changed_meanwhile_is_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    trained = threading.Event()
    real = cache_index.ApproximateIndex.__init__

    def slow(self: cache_index.ApproximateIndex, training: np.ndarray) -> None:
        trained.wait(10)
        real(self, training)

    monkeypatch.setattr(cache_index.ApproximateIndex, "__init__", slow)
    rng = np.random.default_rng(13)
    rows = unit(rng.standard_normal((100, 32)))
    with switching_at(64):
        partition, entries = Partition(32), [entry(str(i)) for i in range(100)]
        for i in range(64):
            partition.add(rows[i], entries[i])
        assert partition.training is not None and partition.index is None
        for i in range(0, 20):  # removed while it trains: labelled, not yet in any index
            partition.remove(entries[i])
        for i in range(64, 100):  # added meanwhile: filed once the index is taken
            partition.add(rows[i], entries[i])
        consistent(partition)
        assert all(best(partition, rows[i]) is entries[i] for i in range(20, 100))
        trained.set()
        partition.settle()
        consistent(partition)
        assert partition.index is not None and len(partition.index) == 80
        assert all(best(partition, rows[i]) is entries[i] for i in range(20, 100))
        assert all(best(partition, rows[i]) is not entries[i] for i in range(20))


def test_a_growing_partition_trains_an_index_with_more_centres_and_loses_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each doubling of the rows past the switch trains a new index, in a thread, while
    the old one serves; what is removed and added meanwhile ends up straight in it."""
    release = threading.Event()
    real = cache_index.ApproximateIndex.__init__
    trainings: list[int] = []

    def held(self: cache_index.ApproximateIndex, training: np.ndarray) -> None:
        trainings.append(len(training))
        if len(trainings) > 1:  # the first trains at once, a retraining waits
            release.wait(10)
        real(self, training)

    monkeypatch.setattr(cache_index.ApproximateIndex, "__init__", held)
    rng = np.random.default_rng(15)
    rows = unit(rng.standard_normal((200, 32)))
    entries = [entry(str(i)) for i in range(200)]
    with switching_at(40):
        partition = Partition(32)
        for i in range(78):  # 40 rows train 1 centre; 78 would train 2
            partition.add(rows[i], entries[i])
            if i == 39:
                partition.settle()
        assert partition.index is not None and partition.index.lists == 1
        assert partition.training is not None and trainings == [40, 78]
        for i in range(0, 10):  # in the old index and in the copy being trained
            partition.remove(entries[i])
        for i in range(78, 120):  # filed in the old index, then in the new one
            partition.add(rows[i], entries[i])
        partition.remove(entries[100])  # added and removed while it trained
        consistent(partition)
        live = [i for i in range(120) if not (i < 10 or i == 100)]
        assert all(best(partition, rows[i]) is entries[i] for i in live)
        release.set()
        partition.settle()
        consistent(partition)
        assert partition.index is not None and partition.index.lists == 2
        assert len(partition.index) == len(live)
        assert all(best(partition, rows[i]) is entries[i] for i in live)
        assert all(best(partition, rows[i]) is not entries[i] for i in range(120)
                   if i not in live)
        for i in range(120, 200):  # 156 rows train 4 centres: a third training
            partition.add(rows[i], entries[i])
        partition.settle()
        consistent(partition)
        assert trainings[2:] == [156] and partition.index.lists == 4


def test_an_index_that_cannot_be_trained_is_said_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: cache_index.ApproximateIndex, training: np.ndarray) -> None:
        raise MemoryError("no room")

    monkeypatch.setattr(cache_index.ApproximateIndex, "__init__", broken)
    rows = unit(np.random.default_rng(14).standard_normal((64, 32)))
    with switching_at(64):
        partition = Partition(32)
        for i, row in enumerate(rows):
            partition.add(row, entry(str(i)))
        with pytest.raises(RuntimeError, match="could not train") as raised:
            partition.settle()
        assert isinstance(raised.value.__cause__, MemoryError)
        consistent(partition)
        assert partition.index is None and partition.training is None


def test_a_partition_past_the_real_switch_is_indexed_and_answers() -> None:
    rng = np.random.default_rng(7)
    size = cache_store.APPROXIMATE_FROM + 300
    rows = unit(rng.standard_normal((size, 512)))
    cache = MemoryCache(size)
    entries = [entry(str(i)) for i in range(size)]
    for row, one in zip(rows, entries, strict=True):
        cache.add("p", row, one)
    partition = partitions(cache)["p"]
    partition.settle()
    assert partition.index is not None and len(partition) == size
    for i in rng.choice(size, 50, replace=False):
        found, similarity = cache.nearest("p", rows[i], 0.0)[0]
        assert found is entries[i] and similarity == pytest.approx(1.0, abs=1e-5)


def test_lru_eviction_drops_the_least_recently_used(switch: int) -> None:
    rng = np.random.default_rng(8)
    rows = unit(rng.standard_normal((200, 32)))
    cache = MemoryCache(100)
    entries = [entry(str(i)) for i in range(200)]
    for i in range(100):
        cache.add("p", rows[i], entries[i])
    settled(cache)
    for i in range(0, 100, 2):
        cache.used(entries[i])  # the even ones: used since
    for i in range(100, 150):
        cache.add("p", rows[i], entries[i])
    assert len(cache) == 100
    for i in range(150):
        names = [found.text for found, _ in cache.nearest("p", rows[i], 0.0)]
        assert (names[0] == str(i)) == (i % 2 == 0 or i >= 100)


def test_expired_entries_are_not_found_and_go(switch: int) -> None:
    rng = np.random.default_rng(9)
    rows = unit(rng.standard_normal((120, 32)))
    cache = MemoryCache(1000)
    entries = [entry(str(i), expires=10.0 if i % 3 else 100.0) for i in range(120)]
    for row, one in zip(rows, entries, strict=True):
        cache.add("p", row, one)
    settled(cache)
    for i, row in enumerate(rows):
        found = cache.nearest("p", row, 50.0)
        assert all(one.expires > 50.0 for one, _ in found)
        assert (bool(found) and found[0][0] is entries[i]) == (i % 3 == 0)
    assert len(cache) == 40  # each expired one was found by its own row, and went
    assert all(one.expires > 50.0 for one in cache.entries())


def test_a_flush_empties_one_scope_or_all(switch: int) -> None:
    rng = np.random.default_rng(10)
    rows = unit(rng.standard_normal((240, 32)))
    cache = MemoryCache(1000)
    entries = [entry(str(i), scope="team=a" if i % 2 else "team=b") for i in range(240)]
    for i, (row, one) in enumerate(zip(rows, entries, strict=True)):
        cache.add(f"p{i % 4}", row, one)  # p1 and p3 hold team=a, p0 and p2 team=b
    cache.put("x", entry("exact", scope="team=a"))
    settled(cache)
    assert cache.flush("team=a") == 121
    assert cache.get("x", 0.0) is None and len(cache) == 120
    for i, row in enumerate(rows):
        found = cache.nearest(f"p{i % 4}", row, 0.0)
        assert (found[0][0] if found else None) is (entries[i] if i % 2 == 0 else None)
    assert cache.flush() == 120 and len(cache) == 0 and not partitions(cache)


# The property test: MemoryCache against a model of LRU and TTL that is a list.

VECTORS = unit(np.random.default_rng(11).standard_normal((64, 16)))


@dataclass
class Held:
    entry: Entry
    kind: str  # "exact" or "semantic"
    where: str  # the key, or the partition
    vector: int = -1


class Model:
    """What the cache should hold: an ordered dict, LRU first, searched by brute force."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.held: OrderedDict[int, Held] = OrderedDict()

    def keep(self, held: Held) -> None:
        if held.kind == "exact":
            for old in [h for h in self.held.values() if h.kind == "exact"
                        and h.where == held.where]:
                del self.held[id(old.entry)]
        self.held[id(held.entry)] = held
        while len(self.held) > self.max_entries:
            self.held.popitem(last=False)

    def get(self, key: str, now: float) -> Entry | None:
        for held in self.held.values():
            if held.kind == "exact" and held.where == key:
                if held.entry.expires <= now:
                    del self.held[id(held.entry)]
                    return None
                self.held.move_to_end(id(held.entry))
                return held.entry
        return None

    def nearest(self, partition: str, vector: int, now: float) -> list[Entry]:
        rows = [h for h in self.held.values() if h.kind == "semantic" and h.where == partition]
        similarity = [float(VECTORS[h.vector] @ VECTORS[vector]) for h in rows]
        found = [rows[i] for i in np.argsort(-np.array(similarity))[:cache_store.CANDIDATES]]
        for held in found:
            if held.entry.expires <= now:
                del self.held[id(held.entry)]
        return [held.entry for held in found if held.entry.expires > now]

    def used(self, one: Entry) -> None:
        if id(one) in self.held:
            self.held.move_to_end(id(one))

    def flush(self, scope: str | None) -> int:
        gone = [k for k, h in self.held.items() if scope is None or h.entry.scope == scope]
        for k in gone:
            del self.held[k]
        return len(gone)


# each kind as often as it is named: partitions have to grow past the switch
KINDS = ["add"] * 6 + ["nearest"] * 4 + ["put", "put", "get", "get", "used", "tick", "flush"]
TTLS = st.sampled_from([2, 15, 1000])


@st.composite
def step(draw: st.DrawFn) -> tuple[object, ...]:
    kind = draw(st.sampled_from(KINDS))
    if kind == "add":
        return kind, draw(st.sampled_from("pq")), draw(TTLS), draw(st.sampled_from("xy"))
    if kind == "put":
        return kind, draw(st.sampled_from("abc")), draw(TTLS), draw(st.sampled_from("xy"))
    if kind == "get":
        return kind, draw(st.sampled_from("abcd"))
    if kind == "nearest":
        return kind, draw(st.sampled_from("pq")), draw(st.integers(0, 63))
    if kind == "used":
        return kind, draw(st.integers(0, 100))
    if kind == "tick":
        return kind, draw(st.sampled_from([1, 5]))
    return kind, draw(st.sampled_from(["x", "y", None]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([1, 3, 12, 30]), st.sampled_from([EXACT, 4, 8]),
       st.lists(step(), min_size=20, max_size=150))
def test_memory_cache_keeps_and_drops_entries_as_a_simple_lru_ttl_model_does(
        max_entries: int, switch: int, steps: list[tuple[object, ...]]) -> None:
    with switching_at(switch):
        cache, model = MemoryCache(max_entries), Model(max_entries)
        now, vectors = 0.0, iter(range(64))
        made: list[Entry] = []
        for step in steps:
            match step:
                case ("put", str(key), int(ttl), str(scope)):
                    one = entry(key, now + ttl, scope)
                    made.append(one)
                    cache.put(key, one)
                    model.keep(Held(one, "exact", key))
                case ("get", str(key)):
                    assert cache.get(key, now) is model.get(key, now)
                case ("add", str(partition), int(ttl), str(scope)):
                    vector = next(vectors, None)
                    if vector is None:
                        continue
                    one = entry(f"{partition}{vector}", now + ttl, scope)
                    made.append(one)
                    cache.add(partition, VECTORS[vector], one)
                    model.keep(Held(one, "semantic", partition, vector))
                case ("nearest", str(partition), int(vector)):
                    found = cache.nearest(partition, VECTORS[vector], now)
                    assert [one for one, _ in found] == model.nearest(partition, vector, now)
                case ("used", int(which)) if made:
                    cache.used(made[which % len(made)])
                    model.used(made[which % len(made)])
                case ("flush", scope):
                    assert cache.flush(scope if isinstance(scope, str) else None) == \
                        model.flush(scope if isinstance(scope, str) else None)
                case ("tick", int(seconds)):
                    now += seconds
            assert len(cache) == len(model.held)
            assert [id(one) for one in cache.entries()] == list(model.held)
            for partition in partitions(cache).values():
                consistent(partition)
