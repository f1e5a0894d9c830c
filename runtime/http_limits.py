"""The HTTP server's own limits: how big a request's head may be, and how long it may
take to arrive.

uvicorn's httptools protocol has neither. A request head (the request line and
the headers) has no size limit, and httptools gathers a header value that
arrives in pieces by concatenating bytes, which costs the square of its size:
a 48 MB header held the event loop for about two seconds, and was then served.
And nothing times out a request
that arrives slowly, so a client sending a byte every few seconds (slowloris)
holds its connection for ever, as does one that connects and sends nothing.

`LimitedProtocol` adds both, in the protocol, before the application sees
anything:

- Head size. A read of at most `max_header_bytes` goes to the parser as it
  comes: no head in it can be over the limit, and a request that arrives in
  one read (nearly all do) costs nothing more. A larger read that starts a
  request is parsed head by head, each one's end looked for within the limit
  first. The rest of a head left unfinished by a read is collected until the
  blank line that ends it and then parsed in one go, so that the parser's cost
  stays linear however it is sliced. A head over the limit is answered 431
  unparsed. The count is exact for a head that starts a read. One pipelined
  after another request in the same read is counted from its next read on, so
  it may pass the limit by its share of that read (at most 250 kB, uvloop's
  read size) before it is caught.
- Read time. A request must arrive whole, head and body, within
  `read_timeout` of its first byte (the first request on a connection, within
  `read_timeout` of the connection opening). Past it, the answer is 408, or a
  plain close if nothing had arrived. Time the gateway spends not reading (an
  answer in progress on the connection, reading paused because the app has not
  taken the body yet) does not count against the client. The deadlines are
  kept in one dict per server and checked by one timer, a few times a second:
  a request costs a dict entry, not a timer of its own.

Errors are answered in OpenAI's shape with `x-gw-request-id` and `x-gw-policy`,
like every other answer of the gateway, and logged in the access log. After one,
the gateway stops reading, sends its answer and half-closes; it closes fully a
moment later (`LINGER`), so that a client still sending reads the answer rather
than a reset.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn._types import HTTPScope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from runtime.access_log import AccessLog
from runtime.request_ids import new_request_id

MAX_HEADER_BYTES = 64 * 1024
READ_TIMEOUT = 30.0  # seconds
LINGER = 2.0  # seconds a refused connection stays half-closed before it is closed
END_OF_HEAD = b"\r\n\r\n"
logger = logging.getLogger("gwc")


@dataclass(frozen=True)
class Limits:
    """The HTTP layer's limits (docs/gateway.md says why these defaults)."""

    max_header_bytes: int = MAX_HEADER_BYTES
    read_timeout: float = READ_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_header_bytes < 1:
            raise ValueError(f"the head size limit must be at least 1 byte, "
                             f"not {self.max_header_bytes}")
        if not self.read_timeout > 0:
            raise ValueError(f"the read timeout must be over 0 seconds, not {self.read_timeout}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        """`GW_MAX_HEADER_BYTES` (bytes) and `GW_REQUEST_READ_TIMEOUT` (seconds); a value
        that is not a positive number raises ValueError naming the variable."""
        size, timeout = env.get("GW_MAX_HEADER_BYTES"), env.get("GW_REQUEST_READ_TIMEOUT")
        try:
            max_header_bytes = int(size) if size else MAX_HEADER_BYTES
            if max_header_bytes < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"GW_MAX_HEADER_BYTES must be a whole number of bytes over 0, "
                             f"not {size!r}") from None
        try:
            read_timeout = float(timeout) if timeout else READ_TIMEOUT
            if not 0 < read_timeout < float("inf"):
                raise ValueError
        except ValueError:
            raise ValueError(f"GW_REQUEST_READ_TIMEOUT must be a number of seconds over 0, "
                             f"not {timeout!r}") from None
        return cls(max_header_bytes, read_timeout)


class ReadClock:
    """The connections reading a request, each with the loop time it began (a dict
    entry, no timer of its own), and the one timer that finds those past the timeout.
    The timer runs only while some connection is reading."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.period = max(0.02, min(1.0, timeout / 4))
        self.since: dict[LimitedProtocol, float] = {}
        self.timer: asyncio.TimerHandle | None = None

    def start(self, protocol: LimitedProtocol) -> None:
        self.since[protocol] = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(self.period, self.sweep)

    def sweep(self) -> None:
        began = self.loop.time() - self.timeout
        try:
            for protocol in [p for p, since in self.since.items() if since <= began]:
                del self.since[protocol]
                try:
                    protocol.read_timed_out()
                except Exception:  # a bug of ours must not stop the clock for the others
                    logger.exception("the read timeout failed")
        finally:
            self.timer = self.loop.call_later(self.period, self.sweep) if self.since else None


def no_version() -> str:
    return ""


@dataclass(frozen=True)
class Settings:
    """What a server's connections share: the limits, where refusals are logged, and the
    loaded policy's version (for x-gw-policy)."""

    limits: Limits = Limits()
    log: AccessLog | None = None
    version: Callable[[], str] = no_version


class LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size limit and a read timeout.

    Use `protocol(limits, ...)`, which makes a subclass carrying the settings, as
    uvicorn.Config's `http`: uvicorn makes one instance per connection.

    Where the parser stands is read from uvicorn's own state, so that a request
    costs one callback more than it did (on_message_complete), not three: uvicorn
    makes a fresh `scope` when a request begins and a `cycle` holding that scope
    when its head is complete; `completed` is the scope of the last request whose
    message was complete.
    """

    settings: ClassVar[Settings] = Settings()
    clocks: ClassVar[dict[asyncio.AbstractEventLoop, ReadClock]] = {}  # per loop, per class

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.completed: HTTPScope | None = None
        self.head_bytes = 0  # bytes of an unfinished head already given to the parser
        self.pending: bytearray | None = None  # the rest of an unfinished head, collected
        self.skip = 0  # bytes at the start of `pending` already parsed (kept to find the end)
        self.limit = self.settings.limits.max_header_bytes
        self.refused = False
        self.deferred = False  # a refusal waits for the answers to earlier requests
        clocks = type(self).clocks
        clock = clocks.get(self.loop)
        if clock is None:
            clock = clocks[self.loop] = ReadClock(self.loop, self.settings.limits.read_timeout)
        self.clock = clock
        self.since = clock.since

    def _in_message(self) -> bool:
        return self.scope is not self.completed

    def _head_done(self) -> bool:
        return self.cycle is not None and self.cycle.scope is self.scope

    # ---------------------------------------------------------------- timing

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.clock.start(self)  # the first request is due within the timeout of connecting

    def connection_lost(self, exc: Exception | None) -> None:
        self.since.pop(self, None)
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)  # super() costs more, once a request
        self.completed = self.scope
        self.since.pop(self, None)

    def handle_websocket_upgrade(self) -> None:
        self.since.pop(self, None)  # the connection is another protocol's from here
        super().handle_websocket_upgrade()

    def read_timed_out(self) -> None:
        """The request being read has taken longer than the timeout."""
        if self.transport.is_closing() or self.refused:
            return
        in_body = self._in_message() and self._head_done()
        if self.flow.read_paused or (self.pipeline if in_body else self._in_flight()):
            # not the client's delay: the gateway is busy with an earlier request on this
            # connection, or has stopped reading until the app takes the body
            self.clock.start(self)
            return
        if in_body and self.cycle.response_started:
            # the app answered without waiting for the rest of the body
            if self.cycle.response_complete:
                self.transport.close()
            else:
                self.clock.start(self)
            return
        if not self._in_message() and not self.pending:
            self.transport.close()  # nothing of a request arrived: nobody to answer
            return
        self.refuse(408, "request_timeout", f"the request did not arrive whole within "
                    f"{self.settings.limits.read_timeout:g} s")

    def _in_flight(self) -> bool:
        """An answer to an earlier request is yet to finish (the newest cycle's is last)."""
        return self.cycle is not None and not self.cycle.response_complete

    # ---------------------------------------------------------------- reading

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self._unset_keepalive_if_required()
        if self not in self.since:
            self.since[self] = self.loop.time()  # ReadClock.start, without the call
            if self.clock.timer is None:
                self.clock.start(self)
        if self.pending is not None:
            self._collect(data)
        elif len(data) > self.limit and self.scope is self.completed:
            self._heads(data, 0)  # a request starts in more bytes than a head may have
        else:  # no head in these bytes can be over the limit: parsed as they are
            self._feed(data)

    def _heads(self, data: bytes | bytearray, start: int) -> None:
        """Parse bytes that start a request at `start`, head by head, each checked before
        it is parsed, until one has a body (fed as it comes) or is unfinished (collected)."""
        limit = self.limit
        view = memoryview(data)
        while start < len(data):
            end = data.find(END_OF_HEAD, start, start + limit)
            if end < 0:
                if len(data) - start >= limit:  # no end within the limit
                    self._too_large()
                else:
                    self._feed(view[start:])
                return
            end += len(END_OF_HEAD)
            self._feed(view[start:end])
            if self.refused or self.transport.is_closing():
                return
            if self.scope is not self.completed:  # the body follows
                if end < len(data):
                    self._feed(view[end:])
                return
            start = end

    def _collect(self, data: bytes) -> None:
        """Add to an unfinished head; parse the rest of it once its end has come."""
        pending = self.pending
        assert pending is not None
        searched = max(0, len(pending) - 3)
        pending += data
        room = self.limit - self.head_bytes + self.skip
        end = pending.find(END_OF_HEAD, searched)
        if end < 0:
            if len(pending) >= room:  # the head is unfinished and already at the limit
                self._too_large()
            return
        end += len(END_OF_HEAD)
        if end > room:
            self._too_large()
            return
        self.pending = None
        view = memoryview(pending)
        self._feed(view[self.skip:end])
        if self.refused or self.transport.is_closing():
            return
        if self.scope is not self.completed:
            if end < len(pending):
                self._feed(view[end:])
        else:
            self._heads(pending, end)

    def _feed(self, data: bytes | memoryview) -> None:
        """Give bytes to the parser; when they leave a head unfinished, collect the rest."""
        scope, completed = self.scope, self.completed
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            # else served as plain HTTP/1.1, the right answer to an offer to upgrade (curl
            # --http2 makes one to every http:// URL), without uvicorn's warning each time
            return
        except httptools.HttpParserError as exc:
            self.refuse(400, "invalid_http", f"the request is not valid HTTP: {exc}")
            return
        if self.scope is self.completed or self._head_done() or self.transport.is_closing():
            return
        # a head is unfinished. Its share of these bytes: all of them if it began them,
        # or unknown (taken as none) if they also held the end of an earlier request
        if scope is self.scope:  # more of the same head
            self.head_bytes += len(data)
        elif scope is completed and self.completed is completed:  # it began them
            self.head_bytes = len(data)
        else:
            self.head_bytes = 0
        if self.head_bytes >= self.limit:
            self._too_large()
            return
        tail = data[-3:]
        self.pending, self.skip = bytearray(tail), len(tail)

    def _too_large(self) -> None:
        self.refuse(431, "headers_too_large", f"the request's head (request line and headers) "
                    f"is over {self.limit} bytes")

    def shutdown(self) -> None:
        if self.refused and not self.deferred:
            self.transport.close()  # not worth waiting for
        else:
            super().shutdown()

    # ---------------------------------------------------------------- refusing

    def send_400_response(self, msg: str) -> None:
        self.refuse(400, "invalid_http", f"the request is not valid HTTP: {msg}")

    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer the request being read with an error, stop reading, and close."""
        self.refused = True
        self.pending = None
        since = self.since.pop(self, None)
        self.flow.pause_reading()
        reading = self.cycle if self._in_message() and self._head_done() else None
        request_id = new_request_id()
        if self.settings.log is not None:
            ms = None if since is None else int((self.loop.time() - since) * 100_000) / 100
            self.settings.log.write({
                "request_id": request_id, "path": reading.scope["path"] if reading else None,
                "status": status, "ms": ms, "policy": self.settings.version(), "error": message})
        answer = self._answer(status, code, message, request_id)
        if reading is not None and any(queued is reading for queued, _ in self.pipeline):
            # queued behind an earlier request: answered in its turn, in place of the app
            async def refusal(scope: Any, receive: Any, send: Any) -> None:
                reading.disconnected = True  # so that uvicorn adds no answer of its own
                self._send(answer)

            self.pipeline = deque((cycle, refusal if cycle is reading else app)
                                  for cycle, app in self.pipeline)
            self.deferred = True
        elif reading is not None:  # the app is waiting for the body: it gets a disconnect
            started = reading.response_started
            reading.disconnected = True
            reading.message_event.set()
            if started:  # and its answer, already under way, is cut short
                self.transport.close()
            else:
                self._send(answer)
        elif self._in_flight():  # sent once the answers to earlier requests are
            last, on_response = self.cycle, self.cycle.on_response

            def then_refuse() -> None:
                on_response()
                if not self.transport.is_closing():
                    self._unset_keepalive_if_required()
                    self._send(answer)

            last.on_response = then_refuse
            self.deferred = True
        else:
            self._send(answer)

    def _send(self, answer: bytes) -> None:
        self.deferred = False
        if self.transport.is_closing():
            return
        self.flow.pause_reading()
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)

    def _answer(self, status: int, code: str, message: str, request_id: str) -> bytes:
        body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                       "code": code, "param": None}})
        head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        head += [b"%s: %s\r\n" % pair for pair in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n",
                 b"content-length: %d\r\n" % len(body),
                 b"x-gw-request-id: %s\r\n" % request_id.encode(),
                 b"x-gw-policy: %s\r\n" % self.settings.version().encode("latin-1", "replace"),
                 b"connection: close\r\n\r\n", body]
        return b"".join(head)


def protocol(limits: Limits, log: AccessLog | None = None,
             version: Callable[[], str] = no_version) -> type[LimitedProtocol]:
    """A protocol class for uvicorn.Config(http=...) with these limits; refusals are
    logged to `log`, and carry `version()` as their x-gw-policy."""
    settings = Settings(limits, log, version)
    return type("GatewayHttpProtocol", (LimitedProtocol,), {"settings": settings,
                                                            "clocks": {}})
