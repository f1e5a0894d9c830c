"""Server-sent events off the wire, and the watch that bounds the gaps between them.

`Parser` turns the bytes of a stream, in whatever pieces they arrive, into
(event, data) pairs. Data stays bytes: orjson reads bytes and checks their
UTF-8 itself, so an undecodable event is simply one that does not parse.

`Watch` is how a stream's first-byte and idle bounds are kept without a timer
per event. One timer is armed per stream; an event costs a clock read and an
attribute store. When the timer fires it looks at when the current wait began:
if the bound has not run out since, it re-arms itself for the moment it will;
if it has, it fails the read that is waiting, with `Stalled`. While the
consumer holds a chunk (the gateway sending it to a slow client) the watch is
paused, since that wait is not the upstream's.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from runtime.providers.wire import Malformed

MAX_LINE = 32 * 1024 * 1024  # one event this long is not a chat stream


class Stalled(TimeoutError):
    """No event within the bound."""


class Parser:
    """SSE framing (the WHATWG rules, lenient at the end): fields `event` and `data`."""

    __slots__ = ("data", "event", "pending", "size")

    def __init__(self) -> None:
        self.pending: list[bytes] = []  # a line's beginning, awaiting its newline
        self.size = 0
        self.event = ""
        self.data: list[bytes] = []

    def feed(self, piece: bytes) -> list[tuple[str, bytes]]:
        """The events that `piece` completes."""
        if b"\n" not in piece:
            self.pending.append(piece)
            self.size += len(piece)
            if self.size > MAX_LINE:
                raise Malformed(f"a line of the stream is over {MAX_LINE} bytes")
            return []
        if self.pending:
            self.pending.append(piece)
            piece = b"".join(self.pending)
            self.pending.clear()
            self.size = 0
        *lines, rest = piece.split(b"\n")
        if rest:
            self.pending.append(rest)
            self.size = len(rest)
        out: list[tuple[str, bytes]] = []
        for line in lines:
            self.line(line, out)
        return out

    def end(self) -> list[tuple[str, bytes]]:
        """What is left when the stream ends: an event without its blank line is kept."""
        out: list[tuple[str, bytes]] = []
        if self.pending:
            self.line(b"".join(self.pending), out)
            self.pending.clear()
        self.line(b"", out)
        return out

    def line(self, line: bytes, out: list[tuple[str, bytes]]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self.data:
                out.append((self.event, b"\n".join(self.data)))
                self.data = []
            self.event = ""
        elif line.startswith(b"data:"):
            value = line[5:]
            self.data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            self.event = line[6:].strip().decode("utf-8", "replace")
        elif line == b"data":
            self.data.append(b"")
        # comments (":..."), "id:", "retry:" and unknown fields are ignored


class Failable(Protocol):
    """What a watch fails when its bound runs out: aiohttp's `StreamReader`."""

    def set_exception(self, exc: BaseException) -> None: ...


class Watch:
    """One timer per stream for its first-byte and idle bounds (see the module's docstring)."""

    __slots__ = ("handle", "limit", "loop", "since", "target")

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Failable, since: float,
                 limit: float) -> None:
        self.loop = loop
        self.target = target
        self.since = since  # when the current wait began; 0.0 while paused
        self.limit = limit
        self.handle: asyncio.TimerHandle | None = loop.call_at(since + limit, self.check)

    def check(self) -> None:
        now = self.loop.time()
        if not self.since:  # paused: the wait has not begun
            self.handle = self.loop.call_at(now + self.limit, self.check)
        elif now < self.since + self.limit:
            self.handle = self.loop.call_at(self.since + self.limit, self.check)
        else:
            self.handle = None
            self.target.set_exception(Stalled(f"no event within {self.limit:g}s"))

    def rearm(self, limit: float) -> None:
        """A new bound from now on (the idle one after the first event, a short one at
        the tail), kept at once rather than at the next check."""
        self.limit = limit
        if self.handle is not None:
            self.handle.cancel()
        self.handle = self.loop.call_at(self.loop.time() + limit, self.check)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
