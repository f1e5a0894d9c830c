"""The semantic cache's vector process: the same answers as partitions in this process,
and a child that dies costs misses, never an error or a wrong hit."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
from collections.abc import AsyncIterator

import numpy as np
import pytest

from policies import lexical, vector_process
from policies.cache_store import Entry, MemoryCache
from policies.embedders import HashEmbedder
from policies.vector_process import EmbedderFailed, Unavailable, VectorProcess


def entry(text: str, scope: str = "team=t") -> Entry:
    return Entry(b"{}", "m", "p", 0.0, scope, math.inf, text)


@contextlib.asynccontextmanager
async def child(embedder: str | None = None) -> AsyncIterator[VectorProcess]:
    vectors = VectorProcess(embedder, restart=0.0)
    try:
        yield vectors
    finally:
        await vectors.close()


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, 16)).astype(np.float32)
    unit: np.ndarray = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit


def test_its_searches_find_what_partitions_in_this_process_find() -> None:
    rows, queries = unit_rows(300, 1), unit_rows(20, 2)

    async def go() -> None:
        async with child() as vectors:
            remote, local = MemoryCache(1000, vectors), MemoryCache(1000)
            await vectors.start()
            for i, row in enumerate(rows):
                scope = "team=gone" if i % 7 == 0 else "team=t"  # to be flushed
                remote.add(f"p{i % 2}", row, entry(f"r{i}", scope))
                local.add(f"p{i % 2}", row, entry(f"r{i}", scope))
            # a removed row is filled by its partition's last one, on both sides alike
            assert remote.flush("team=gone") == local.flush("team=gone") == 43
            for query in queries:
                for partition in ("p0", "p1"):
                    found, hits = await vectors.search(partition, "", query, 4)
                    assert np.array_equal(found, query)
                    wanted = local.nearest(partition, query, 0.0)
                    assert [e.text for e, _ in hits] == [e.text for e, _ in wanted]
                    assert [s for _, s in hits] == pytest.approx([s for _, s in wanted])
    asyncio.run(go())


def test_it_embeds_a_message_as_the_embedder_does_and_finds_it_again() -> None:
    async def go() -> None:
        async with child("hash") as vectors:
            cache = MemoryCache(10, vectors)
            found, hits = await vectors.search("p", "How do I rotate my keys?", None, 4)
            assert hits == []
            assert np.array_equal(found, HashEmbedder().embed(["How do I rotate my keys?"])[0])
            kept = entry("How do I rotate my keys?")
            cache.add("p", found, kept)
            _, hits = await vectors.search("p", "How do I rotate my keys?", None, 4)
            assert hits[0][0] is kept and hits[0][1] == pytest.approx(1.0)
    asyncio.run(go())


def test_with_a_threshold_it_answers_only_the_hits_the_lexical_guard_lets_through() -> None:
    async def go() -> None:
        async with child("hash") as vectors:
            cache = MemoryCache(10, vectors)
            for text in ("How do I enable 2FA?", "How do I enable 2FA on my account?"):
                found, _ = await vectors.search("p", text, None, 4)
                cache.add("p", found, entry(text))
            _, near = await vectors.search("p", "How do I disable 2FA?", None, 4)
            assert len(near) == 2 and near[1][1] > 0.35  # alike, as far as vectors go
            _, hits = await vectors.search("p", "How do I disable 2FA?", None, 4, 0.35)
            assert hits == []  # the opposite ask
            _, hits = await vectors.search("p", "How do I enable 2FA?", None, 4, 0.35)
            assert [e.text for e, _ in hits] == ["How do I enable 2FA?",
                                                 "How do I enable 2FA on my account?"]
            _, hits = await vectors.search("p", "How do I enable 2FA?", None, 4, 0.999)
            assert [e.text for e, _ in hits] == ["How do I enable 2FA?"]  # the threshold
    asyncio.run(go())


def test_the_child_reads_a_missed_message_once_for_its_search_and_its_add(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A miss's message is read by the guard as it is searched; its add (the same
    text, back with the answer) keeps that reading rather than making another."""
    read: list[str] = []
    features = lexical.features

    def reading(text: str) -> lexical.Features:
        read.append(text)
        return features(text)
    monkeypatch.setattr(lexical, "features", reading)
    embed = HashEmbedder().embed
    held = vector_process.Held()

    def search(ident: int, text: str) -> list[int]:
        _, (outcome, vector, hits) = held.search({text: embed([text])[0]}, False, "", ident,
                                                 "p", text, None, 4, 0.35)
        assert outcome == "ok"
        held.add("p", ident, text, vector)
        return [label for label, _ in hits]

    texts = [f"What is {n} times 23?" for n in (17, 18, 19)]
    assert [search(i, text) for i, text in enumerate(texts)] == [[], [], []]  # numbers differ
    assert sorted(read) == sorted(texts)  # each read once, as a query or as a candidate
    assert search(9, texts[0]) == [0]  # and a reading kept serves the same ask


def test_the_readings_kept_for_adds_are_bounded_by_their_characters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_process, "READINGS", 100)
    readings = vector_process.Readings()
    texts = [f"{n} " + "word " * 8 for n in range(10)]  # 42 characters each
    for text in texts:
        readings.read(text)
    assert readings.characters == sum(map(len, readings.held)) <= 100
    assert list(readings.held) == texts[-2:]  # the oldest went first
    assert readings.read(texts[-1]) is readings.held[texts[-1]]  # kept, not counted again
    assert readings.characters == 2 * len(texts[-1])
    readings.read("x" * 101)  # longer than all that may be kept: read, not kept
    assert "x" * 101 not in readings.held
    assert readings.take(texts[-1]) is not None and readings.take(texts[0]) is None
    assert readings.characters == len(texts[-2])


def test_a_child_that_stops_answering_is_killed_and_its_searches_are_misses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_process, "ANSWERING", 0.3)

    async def go() -> float:
        async with child() as vectors:
            vectors.restart = 60.0
            await vectors.start()
            assert vectors._child is not None
            os.kill(vectors._child.pid, signal.SIGSTOP)
            row = unit_rows(1, 7)[0]
            started = asyncio.get_running_loop().time()
            answers = await asyncio.gather(*(vectors.search("p", "", row, 4) for _ in range(5)),
                                           return_exceptions=True)
            took = asyncio.get_running_loop().time() - started
            assert all(isinstance(a, Unavailable) and "in time" in str(a) for a in answers)
            await asyncio.wait_for(vectors._child.wait(), 2)  # killed, not left stopped
            return took
    assert asyncio.run(go()) < 1.0


def test_a_child_that_dies_makes_misses_then_a_new_one_starts_empty() -> None:
    async def go() -> None:
        async with child() as vectors:
            cache = MemoryCache(10, vectors)
            vectors.forget = cache.forget
            vectors.restart = 60.0  # no new child at once: a miss, not a wait
            await vectors.start()
            row = unit_rows(1, 3)[0]
            cache.add("p", row, entry("kept"))
            assert (await vectors.search("p", "", row, 4))[1]
            assert vectors._child is not None
            os.kill(vectors._child.pid, signal.SIGKILL)
            with pytest.raises(Unavailable):  # the search in flight, or the one after it
                for _ in range(50):
                    await vectors.search("p", "", row, 4)
                    await asyncio.sleep(0.01)
            assert len(cache) == 0 and not vectors.labelled  # forgotten with the child
            with pytest.raises(Unavailable):
                await vectors.search("p", "", row, 4)
            vectors.restart = 0.0
            found, hits = await vectors.search("p", "", row, 4)  # a new child
            assert hits == [] and np.array_equal(found, row)
    asyncio.run(go())


def test_a_row_kept_before_the_child_runs_is_never_found_and_nothing_fails() -> None:
    async def go() -> None:
        async with child() as vectors:
            cache = MemoryCache(10, vectors)
            row = unit_rows(1, 4)[0]
            early = entry("early")
            cache.add("p", row, early)
            assert early.label == -1 and len(cache) == 0  # it could never be found
            _, hits = await vectors.search("p", "", row, 4)
            assert hits == []
            cache.flush()  # an entry without a row goes quietly
    asyncio.run(go())


def test_a_search_it_cannot_answer_fails_alone_and_the_child_goes_on() -> None:
    async def go() -> None:
        async with child() as vectors:
            cache = MemoryCache(10, vectors)
            await vectors.start()
            row = unit_rows(1, 5)[0]
            cache.add("p", row, entry("kept"))
            with pytest.raises(Unavailable, match="failed"):  # 8 floats against 16
                await vectors.search("p", "", np.ones(8, dtype=np.float32), 4)
            _, hits = await vectors.search("p", "", row, 4)
            assert [e.text for e, _ in hits] == ["kept"]
    asyncio.run(go())


def test_an_embedder_that_cannot_load_is_said_once_per_search_not_a_crash() -> None:
    async def go() -> None:
        async with child("no-such-embedder") as vectors:
            for _ in range(2):
                with pytest.raises(EmbedderFailed, match="no-such-embedder"):
                    await vectors.search("p", "a question", None, 4)
    asyncio.run(go())


def test_searches_that_arrive_together_start_one_child() -> None:
    async def go() -> int:
        async with child() as vectors:
            row = unit_rows(1, 6)[0]
            await asyncio.gather(*(vectors.search("p", "", row, 4) for _ in range(8)))
            return len(vector_processes_of(os.getpid()))
    assert asyncio.run(go()) == 1
    assert vector_processes_of(os.getpid()) == []  # and closing ends it


def vector_processes_of(parent: int) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmd:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
                if ppid == parent and b"policies.vector_process" in cmd.read():
                    found.append(pid)
        except OSError:  # gone meanwhile
            continue
    return found
