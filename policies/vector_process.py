"""A semantic cache's rows, embeddings and searches, in a process of their own.

A semantic miss embeds its message, searches its partition and files the new
row in the partition's index: some hundred microseconds of numpy and faiss,
which on the gateway's event loop halved its throughput, and in a thread
beside it did worse (the loop and the thread hand the interpreter lock back
and forth at every call that lets go of it). In a child process they run on
the other core, and the loop only writes a request and reads the answer.
So does the lexical guard (policies/lexical.py), which reads each message
and compares it with every candidate at the threshold or above: the child
answers only the candidates that are hits but for their expiry, and the loop
never reads a message's words. Vectors travel as their float32 bytes (a
pickled array costs ten times as much to write and read), and one timer per
child, not one per search, watches for a child that stopped answering.

The gateway keeps the entries (answers, expiry, the LRU order, in
`cache_store.MemoryCache`); the child keeps, for each entry, its row under a
label, in the same `Partition`s an in-process cache uses. Both sides read
and write one pipe each, frames of a length and a pickle, in order: a search
finds every row added before it. The child embeds the messages of the searches
that arrived together in one batch.

It starts when a semantic block first needs it, and the searches of that
moment wait for it to be ready (a few hundred milliseconds; an embedding model
loads there). A child that dies, or does not answer a search in time (it is
then killed), makes lookups misses (`Unavailable`, an `OSError` the cache stage
logs), and the gateway forgets the entries whose rows it held; a new one is
started `RESTART` seconds later, not on every request. A message the child
cannot take (a vector of another width, an embedder that fails) is answered
with its failure, a miss, and the child goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from policies import lexical
from policies.cache_store import Entry, Partitions

LENGTH = struct.Struct("<I")
STARTING = 30.0  # seconds a first search waits for the child to load its embedder
ANSWERING = 2.0  # seconds a search waits for its answer, after which the child is killed
RESTART = 5.0  # seconds after a child stopped before another is started
BACKLOG = 32 << 20  # bytes not yet taken by the child past which writes are dropped
FILING = 0.05  # seconds an add or a remove waits for a search to go with, at most
READINGS = 1 << 22  # characters of searched messages whose guard readings the child keeps

Hits = list[tuple[Entry, float]]


class Unavailable(ConnectionError):
    """The child is gone, is starting too slowly, or does not answer: a miss."""


class EmbedderFailed(Exception):
    """The child could not load the block's embedder (its extra not installed)."""


class VectorProcess:
    """The gateway's side of one child: `cache_store.Rows` for a `MemoryCache`, and
    `search`, which embeds (unless given a vector) and searches in the child."""

    def __init__(self, embedder: str | None, forget: Callable[[], None] = lambda: None,
                 restart: float = RESTART) -> None:
        self.embedder = embedder  # None: vectors come with each search (model(NAME))
        self.restart = restart
        self.forget = forget  # drops the entries whose rows a dead child held
        self.labelled: dict[int, Entry] = {}
        self._next = 0
        self._child: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future[None] | None = None
        self._starting = asyncio.Lock()  # one child started, however many ask at once
        self._stopped_at = -math.inf  # when the last child stopped (loop time)
        self._waiting: dict[int, asyncio.Future[Any]] = {}  # in the order asked
        self._asked: dict[int, float] = {}  # when each waiting search was asked (loop time)
        self._watchdog: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[None] | None = None
        self._running = False  # the child said it is ready, and has not stopped
        self._outgoing: list[bytes] = []  # frames for the next write
        self._soon = False  # a write is due this turn of the event loop (a search waits)
        self._later: asyncio.TimerHandle | None = None  # one due within FILING (adds only)

    def add(self, partition: str, vector: np.ndarray, entry: Entry) -> bool:
        """A row for `entry`; with no child running, none (and False)."""
        label = self._next = self._next + 1
        if not self._send(("add", partition, label, entry.text, _wire(vector)), soon=False):
            return False
        entry.label = label
        self.labelled[label] = entry
        return True

    def remove(self, partition: str, entry: Entry) -> None:
        if self.labelled.pop(entry.label, None) is not None:
            self._send(("remove", partition, entry.label), soon=False)
        entry.label = -1

    async def search(self, partition: str, text: str, vector: np.ndarray | None,
                     count: int, threshold: float | None = None) -> tuple[np.ndarray, Hits]:
        """The message's vector and the partition's rows most like it, best first: of
        the `count` nearest, with a `threshold`, only those at it or above that the
        lexical guard finds ask what `text` asks (hits, if they have not expired)."""
        await self.start()
        ident = self._next = self._next + 1
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._waiting[ident] = answer
        if not self._send(("search", ident, partition, text, None if vector is None
                           else _wire(vector), count, threshold)):
            del self._waiting[ident]
            raise Unavailable("the cache's vector process is not running or is behind")
        self._asked[ident] = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_later(ANSWERING, self._watch)
        try:
            outcome, *reply = await answer
        finally:
            self._waiting.pop(ident, None)
            self._asked.pop(ident, None)
        if outcome == "embedder":
            raise EmbedderFailed(reply[0])
        if outcome == "failed":
            raise Unavailable(f"the cache's vector process failed: {reply[0]}")
        found, hits = reply
        labelled = self.labelled
        return np.frombuffer(found, dtype=np.float32), [
            (labelled[label], similarity) for label, similarity in hits if label in labelled]

    def _watch(self) -> None:
        """Kill a child whose oldest waiting search has waited ANSWERING: it stalled (its
        reader then forgets what it held); else look again when that search would have."""
        self._watchdog = None
        if not self._asked:
            return
        loop = asyncio.get_running_loop()
        late = next(iter(self._asked.values())) + ANSWERING - loop.time()  # the oldest's
        if late > 0:
            self._watchdog = loop.call_later(late, self._watch)
            return
        self._fail(Unavailable("the cache's vector process did not answer in time"))
        if self._child is not None and self._child.returncode is None:
            self._child.kill()

    async def start(self) -> None:
        """A child running and ready: started if there is none, or if the last one
        stopped `restart` seconds ago (before that, `Unavailable`)."""
        if self._running:  # every lookup asks: the common answer takes no lock, no timer
            return
        async with self._starting:
            stopped = self._ready is not None and self._ready.done() and not self._running
            if self._child is None or stopped:
                loop = asyncio.get_running_loop()
                if loop.time() - self._stopped_at < self.restart:
                    raise Unavailable("the cache's vector process stopped; it restarts soon")
                self._running = False
                self._ready = ready = loop.create_future()
                ready.add_done_callback(lambda done: done.exception())  # read if unawaited
                self._child = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "policies.vector_process", self.embedder or "",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
                self._reader = loop.create_task(self._read(self._child))
        assert self._ready is not None
        try:
            async with asyncio.timeout(STARTING):
                await asyncio.shield(self._ready)
        except TimeoutError:
            raise Unavailable("the cache's vector process is still starting") from None

    async def close(self) -> None:
        child, self._child, self._running = self._child, None, False
        self._fail(Unavailable("the cache's vector process was closed"))
        for timer in (self._watchdog, self._later):
            if timer is not None:
                timer.cancel()
        self._watchdog = self._later = None
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

    def _send(self, message: tuple[Any, ...], soon: bool = True) -> bool:
        """Whether `message` is on its way: not when no child is ready, or it is far
        behind. Messages go together, in the order sent: a search at the end of this
        turn of the event loop, with all that the turn's requests asked; an add or a
        remove with the next search, or FILING later if none comes. A write wakes the
        child, which costs the loop more than the write itself (tens of µs here), and
        a search still finds every row added before it."""
        child = self._child
        if not self._running or child is None or child.stdin is None \
                or child.stdin.is_closing() \
                or child.stdin.transport.get_write_buffer_size() > BACKLOG:
            return False
        self._outgoing.append(frame(message))
        if soon and not self._soon:
            self._soon = True
            asyncio.get_running_loop().call_soon(self._flush)
        elif not soon and not self._soon and self._later is None:
            self._later = asyncio.get_running_loop().call_later(FILING, self._flush)
        return True

    def _flush(self) -> None:
        child, self._soon = self._child, False
        if self._later is not None:
            self._later.cancel()
            self._later = None
        outgoing, self._outgoing = self._outgoing, []
        if outgoing and child is not None and child.stdin is not None \
                and not child.stdin.is_closing():
            child.stdin.writelines(outgoing)

    def _fail(self, reason: Unavailable) -> None:
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(reason)

    async def _read(self, child: asyncio.subprocess.Process) -> None:
        """Answers as they come, each to its search; the first frame says the child is
        ready. At the end (the child gone), whatever waits hears of it."""
        assert child.stdout is not None and self._ready is not None
        ready, held = self._ready, b""
        try:
            while data := await child.stdout.read(1 << 20):
                replies, held = frames(held + data)
                for ident, reply in replies:
                    if ident == 0:
                        self._running = True
                        if not ready.done():
                            ready.set_result(None)
                    elif (waiting := self._waiting.get(ident)) is not None \
                            and not waiting.done():
                        waiting.set_result(reply)
        finally:
            gone = Unavailable("the cache's vector process stopped")
            if not ready.done():
                ready.set_exception(gone)
            if self._child is child:  # not closed, nor replaced: it died
                self._running = False
                self._stopped_at = asyncio.get_running_loop().time()
                self._outgoing.clear()  # its rows' adds and removes: it holds none now
                self._fail(gone)
                self.labelled.clear()
                self.forget()
                if child.stdin is not None:
                    child.stdin.close()
                await child.wait()


def _wire(vector: np.ndarray) -> bytes:
    """A vector as it travels: its float32 bytes."""
    return np.asarray(vector, dtype=np.float32).tobytes()


def frame(message: Any) -> bytes:
    """One message on the wire: its pickle's length, then the pickle."""
    pickled = pickle.dumps(message, protocol=5)
    return LENGTH.pack(len(pickled)) + pickled


def frames(held: bytes) -> tuple[list[Any], bytes]:
    """The whole frames at the start of `held`, unpickled, and what is left of it."""
    found, start = [], 0
    while len(held) - start >= LENGTH.size:
        (size,) = LENGTH.unpack_from(held, start)
        end = start + LENGTH.size + size
        if end > len(held):
            break
        found.append(pickle.loads(held[start + LENGTH.size:end]))
        start = end
    return found, held[start:]


# ------------------------------------------------------------------ the child

def main() -> None:
    """The child: frames in on stdin, answers out on stdout, until stdin closes. A
    Ctrl-C in the gateway's terminal is the gateway's to handle: it closes stdin
    once it has drained."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.fileno()
    sys.stdout = sys.stderr  # nothing but frames on the answers' pipe
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    embed: Callable[[list[str]], np.ndarray] | None = None
    failed = ""
    if name:
        from policies import embedders
        try:
            embed = embedders.embedder(name).embed
        except Exception as exc:  # its extra not installed, its model unreadable
            failed = str(exc) or type(exc).__name__
    rows = Held()
    _write(out, [(0, None)])
    held = b""
    while data := os.read(0, 1 << 20):
        messages, held = frames(held + data)
        _write(out, rows.run(messages, embed, failed))


def _write(out: int, replies: list[tuple[int, Any]]) -> None:
    data = memoryview(b"".join(frame(reply) for reply in replies))
    while data:
        data = data[os.write(out, data):]


class Held:
    """The child's partitions (`cache_store.Partitions`), each row a stub standing
    for one of the gateway's entries: the stub's `key` is its label, its `text` the
    entry's message, whose guard reading (`guard`) comes with it from the search
    that missed, or is made the first time it is a candidate."""

    def __init__(self) -> None:
        self.partitions = Partitions()
        self.stubs: dict[tuple[str, int], Entry] = {}
        self.readings = Readings()

    def run(self, messages: list[tuple[Any, ...]],
            embed: Callable[[list[str]], np.ndarray] | None, failed: str
            ) -> list[tuple[int, Any]]:
        """The messages in order, the searches' texts embedded together first; a
        message that fails is answered with its failure, and the rest go on."""
        texts = [m[3] for m in messages if m[0] == "search" and m[4] is None]
        vectors: dict[str, np.ndarray] = {}
        trouble = failed or ("this cache has no embedder" if texts and embed is None else "")
        if texts and embed is not None:
            try:
                vectors = dict(zip(texts, embed(texts), strict=True))
            except Exception as exc:  # each search of the batch hears of it
                trouble = f"embedding failed: {exc}"
        replies: list[tuple[int, Any]] = []
        for kind, *fields in messages:
            try:
                if kind == "add":
                    self.add(*fields)
                elif kind == "remove":
                    self.remove(*fields)
                else:
                    replies.append(self.search(vectors, bool(failed), trouble, *fields))
            except Exception as exc:  # a vector of another width, say: that one fails
                if kind == "search":
                    replies.append((fields[0], ("failed", str(exc) or type(exc).__name__)))
        return replies

    def search(self, vectors: dict[str, np.ndarray], unloaded: bool, trouble: str,
               ident: int, partition: str, text: str, vector: bytes | None, count: int,
               threshold: float | None) -> tuple[int, Any]:
        """One search's answer: its vector (`vectors[text]`, or the one it came with)
        and its partition's nearest rows by label (with a threshold, the hits among
        them); or why there is none."""
        if vector is None and text not in vectors:
            return ident, ("embedder" if unloaded else "failed", trouble)
        found = vectors[text] if vector is None else np.frombuffer(vector, dtype=np.float32)
        hits = self.partitions.nearest(partition, found, count) if count else []
        if threshold is not None:
            hits = _guarded(hits, text, threshold, self.readings)
        return ident, ("ok", _wire(found),
                       [(int(stub.key), similarity) for stub, similarity in hits])

    def add(self, partition: str, label: int, text: str, vector: bytes) -> None:
        stub = Entry(b"", "", "", 0.0, "", math.inf, text, key=str(label),
                     guard=self.readings.take(text))
        self.partitions.add(partition, np.frombuffer(vector, dtype=np.float32), stub)
        self.stubs[partition, label] = stub

    def remove(self, partition: str, label: int) -> None:
        stub = self.stubs.pop((partition, label), None)
        if stub is not None:
            self.partitions.remove(partition, stub)


class Readings:
    """The guard's readings of the messages searched lately, for the adds that follow:
    a miss's message comes back with its answer, and its stub then need not be read
    again (a reading is most of a guarded search's time). Bounded by the characters of
    the messages kept (READINGS; a reading takes a few times its text's size), the
    oldest dropped first, so that long messages cannot fill the child."""

    def __init__(self) -> None:
        self.held: dict[str, lexical.Features] = {}
        self.characters = 0

    def read(self, text: str) -> lexical.Features:
        found = self.held.get(text)
        if found is None:
            found = lexical.features(text)
            if len(text) <= READINGS:
                self.held[text] = found
                self.characters += len(text)
                while self.characters > READINGS:
                    oldest = next(iter(self.held))
                    del self.held[oldest]
                    self.characters -= len(oldest)
        return found

    def take(self, text: str) -> lexical.Features | None:
        found = self.held.pop(text, None)
        if found is not None:
            self.characters -= len(text)
        return found


def _guarded(found: Hits, text: str, threshold: float, readings: Readings) -> Hits:
    """Those of `found` (best first) at `threshold` or above that ask what `text` asks,
    by the lexical guard: "enable 2FA" is not "disable 2FA", however alike."""
    hits: Hits = []
    mine: lexical.Features | None = None  # the guard's reading of this message, once
    for stub, similarity in found:
        if similarity < threshold:
            break
        if stub.text != text:
            if stub.guard is None:
                stub.guard = lexical.features(stub.text)
            mine = mine or readings.read(text)
            if not lexical.compatible(stub.guard, mine):
                continue
        hits.append((stub, similarity))
    return hits


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):  # the gateway is gone
        main()
