"""A semantic cache's rows, embeddings and searches, in a process of their own.

A semantic miss embeds its message, searches its partition and files the new
row in the partition's index: some hundred microseconds of numpy and faiss,
which on the gateway's event loop halved its throughput, and in a thread
beside it did worse (the loop and the thread hand the interpreter lock back
and forth at every call that lets go of it). In a child process they run on
the other core, and the loop only writes a request and reads the answer:
about 20 µs.

The gateway keeps the entries (answers, expiry, the LRU order, in
`cache_store.MemoryCache`); the child keeps, for each entry, its row under a
label, in the same `Partition`s an in-process cache uses. Both sides read
and write one pipe each, frames of a length and a pickle, in order: a search
finds every row added before it. The child embeds the messages of the searches
that arrived together in one batch.

It starts when a semantic block first needs it, and a search waits for it to
be ready (a few hundred milliseconds; an embedding model loads there). A child
that dies or does not answer in time makes the lookups misses (`Unavailable`,
an `OSError` the cache stage logs), and the gateway forgets the entries whose
rows it held; the next lookup starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pickle
import struct
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from policies.cache_store import Entry, Partition

LENGTH = struct.Struct("<I")
STARTING = 30.0  # seconds a first search waits for the child to load its embedder
ANSWERING = 2.0  # seconds a search waits for its answer
BACKLOG = 32 << 20  # bytes not yet taken by the child past which writes are dropped

Hits = list[tuple[Entry, float]]


class Unavailable(ConnectionError):
    """The child is gone, is starting too slowly, or does not answer: a miss."""


class EmbedderFailed(Exception):
    """The child could not load the block's embedder (its extra not installed)."""


class VectorProcess:
    """The gateway's side of one child: `cache_store.Rows` for a `MemoryCache`, and
    `search`, which embeds (unless given a vector) and searches in the child."""

    def __init__(self, embedder: str | None, forget: Callable[[], None] = lambda: None
                 ) -> None:
        self.embedder = embedder  # None: vectors come with each search (model(NAME))
        self.forget = forget  # drops the entries whose rows a dead child held
        self.labelled: dict[int, Entry] = {}
        self._next = 0
        self._child: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future[None] | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._running = False  # the child said it is ready, and has not stopped
        self._outgoing: list[bytes] = []  # frames for the next write

    def add(self, partition: str, vector: np.ndarray, entry: Entry) -> None:
        """A row for `entry`; with no child running, none (the entry is never found)."""
        label = self._next = self._next + 1
        if self._send(("add", partition, label, np.asarray(vector, dtype=np.float32))):
            entry.label = label
            self.labelled[label] = entry

    def remove(self, partition: str, entry: Entry) -> None:
        if self.labelled.pop(entry.label, None) is not None:
            self._send(("remove", partition, entry.label))
        entry.label = -1

    async def search(self, partition: str, text: str, vector: np.ndarray | None,
                     count: int) -> tuple[np.ndarray, Hits]:
        """The message's vector and the partition's rows most like it, best first."""
        await self.start()
        ident = self._next = self._next + 1
        answer = asyncio.get_running_loop().create_future()
        self._waiting[ident] = answer
        if not self._send(("search", ident, partition, text if vector is None else None,
                           vector, count)):
            del self._waiting[ident]
            raise Unavailable("the cache's vector process is not running or is behind")
        try:
            async with asyncio.timeout(ANSWERING):
                reply = await answer
        except TimeoutError:
            raise Unavailable("the cache's vector process did not answer in time") from None
        finally:
            self._waiting.pop(ident, None)
        if isinstance(reply, str):
            raise EmbedderFailed(reply)
        found, hits = reply
        labelled = self.labelled
        return found, [(labelled[label], similarity) for label, similarity in hits
                       if label in labelled]

    async def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        try:
            async with asyncio.timeout(2):
                await child.wait()
        except TimeoutError:
            child.kill()
            await child.wait()
        if self._reader is not None:
            self._reader.cancel()

    async def start(self) -> None:
        """A child running and ready, started if there is none (or it stopped: its
        reader has then forgotten what it held)."""
        stopped = self._ready is not None and self._ready.done() and not self._running
        if self._child is None or stopped:
            self._running = False
            self._ready = asyncio.get_running_loop().create_future()
            self._child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "policies.vector_process", self.embedder or "",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            self._reader = asyncio.get_running_loop().create_task(self._read(self._child))
        assert self._ready is not None
        try:
            async with asyncio.timeout(STARTING):
                await asyncio.shield(self._ready)
        except TimeoutError:
            raise Unavailable("the cache's vector process is still starting") from None

    def _send(self, message: tuple[Any, ...]) -> bool:
        """Whether `message` is on its way: not when no child is ready, or it is far
        behind. Messages go together, once per turn of the event loop: one write (and
        one wake of the child) for all that the turn's requests asked."""
        child = self._child
        if not self._running or child is None or child.stdin is None \
                or child.stdin.is_closing() \
                or child.stdin.transport.get_write_buffer_size() > BACKLOG:
            return False
        frame = pickle.dumps(message, protocol=5)
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush, child)
        self._outgoing += (LENGTH.pack(len(frame)), frame)
        return True

    def _flush(self, child: asyncio.subprocess.Process) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if child is self._child and child.stdin is not None and not child.stdin.is_closing():
            child.stdin.writelines(outgoing)

    async def _read(self, child: asyncio.subprocess.Process) -> None:
        """Answers as they come, each to its search; the first frame says the child is
        ready. At the end (the child gone), whatever waits hears of it."""
        assert child.stdout is not None and self._ready is not None
        ready, held = self._ready, b""
        try:
            while data := await child.stdout.read(1 << 20):
                held += data
                start = 0
                while len(held) - start >= LENGTH.size:
                    (size,) = LENGTH.unpack_from(held, start)
                    end = start + LENGTH.size + size
                    if end > len(held):
                        break
                    ident, reply = pickle.loads(held[start + LENGTH.size:end])
                    start = end
                    if ident == 0:
                        self._running = True
                        if not ready.done():
                            ready.set_result(None)
                    elif (waiting := self._waiting.get(ident)) is not None \
                            and not waiting.done():
                        waiting.set_result(reply)
                held = held[start:]
        finally:
            gone = Unavailable("the cache's vector process stopped")
            if not ready.done():
                ready.set_exception(gone)
            if self._child is child:  # not closed, nor replaced: it died
                self._running = False
                for waiting in self._waiting.values():
                    if not waiting.done():
                        waiting.set_exception(gone)
                self.labelled.clear()
                self.forget()
                if child.stdin is not None:
                    child.stdin.close()
                await child.wait()


# ------------------------------------------------------------------ the child

def main() -> None:
    """The child: frames in on stdin, answers out on stdout, until stdin closes."""
    out = sys.stdout.fileno()
    sys.stdout = sys.stderr  # nothing but frames on the answers' pipe
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    embed: Callable[[list[str]], np.ndarray] | None = None
    failed = ""
    if name:
        from policies import embedders
        try:
            embed = embedders.embedder(name).embed
        except embedders.EmbedderUnavailable as exc:
            failed = str(exc)
    rows = Rows()
    _write(out, [(0, None)])
    held = b""
    while data := os.read(0, 1 << 20):
        held += data
        messages, start = [], 0
        while len(held) - start >= LENGTH.size:
            (size,) = LENGTH.unpack_from(held, start)
            end = start + LENGTH.size + size
            if end > len(held):
                break
            messages.append(pickle.loads(held[start + LENGTH.size:end]))
            start = end
        held = held[start:]
        _write(out, rows.run(messages, embed, failed))


def _write(out: int, replies: list[tuple[int, Any]]) -> None:
    frames = [pickle.dumps(reply, protocol=5) for reply in replies]
    data = memoryview(b"".join(LENGTH.pack(len(frame)) + frame for frame in frames))
    while data:
        data = data[os.write(out, data):]


class Rows:
    """The child's partitions, each row an entry that stands for one of the gateway's:
    its label is in the stub's `key`."""

    def __init__(self) -> None:
        self.partitions: dict[str, Partition] = {}
        self.stubs: dict[tuple[str, int], Entry] = {}

    def run(self, messages: list[tuple[Any, ...]],
            embed: Callable[[list[str]], np.ndarray] | None, failed: str
            ) -> list[tuple[int, Any]]:
        """The messages in order, the searches' messages embedded together first."""
        texts = [m[3] for m in messages if m[0] == "search" and m[3] is not None]
        vectors = iter(embed(texts)) if texts and embed is not None else iter(())
        replies: list[tuple[int, Any]] = []
        for message in messages:
            if message[0] == "add":
                self.add(*message[1:])
            elif message[0] == "remove":
                self.remove(*message[1:])
            else:
                _, ident, partition, text, vector, count = message
                if text is not None and embed is None:
                    replies.append((ident, failed or "this cache has no embedder"))
                    continue
                found = next(vectors) if text is not None else vector
                rows = self.partitions.get(partition)
                hits = [] if rows is None or not count else rows.nearest(found, count)
                replies.append((ident, (found, [(int(stub.key), similarity)
                                                for stub, similarity in hits])))
        return replies

    def add(self, partition: str, label: int, vector: np.ndarray) -> None:
        rows = self.partitions.get(partition)
        if rows is None:
            rows = self.partitions[partition] = Partition(len(vector))
        stub = Entry(b"", "", "", 0.0, "", math.inf, key=str(label))
        self.stubs[partition, label] = stub
        rows.add(vector, stub)

    def remove(self, partition: str, label: int) -> None:
        stub = self.stubs.pop((partition, label), None)
        if stub is None:
            return
        rows = self.partitions[partition]
        rows.remove(stub)
        if not rows.entries:
            del self.partitions[partition]


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        main()
