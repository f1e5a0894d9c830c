"""The HTTP layer's own limits (runtime/http_limits.py), on the real server: uvicorn
with gwc's protocol on a loopback port, driven by a raw socket, with small settings
(a 4 KiB head, a 0.3 s read timeout) so that each test takes a moment."""

from __future__ import annotations

import asyncio
import io
import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

from runtime import http_limits
from runtime.access_log import AccessLog
from runtime.http_limits import Limits, ReadClock, protocol
from tests.fakes import free_port

HEAD_LIMIT = 4096
TIMEOUT = 0.3
LATE = TIMEOUT + 0.5  # the timeout, its timer's period, and room for a busy machine


@dataclass
class Server:
    port: int
    thread: threading.Thread
    log: io.BytesIO
    access: AccessLog
    disconnects: list[str] = field(default_factory=list)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def logged(self) -> list[dict[str, Any]]:
        self.access.flush()
        return [json.loads(line) for line in self.log.getvalue().splitlines()]

    def cpu(self) -> float:
        """CPU seconds the server's thread has used."""
        assert self.thread.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(self.thread.ident))


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    saved, http_limits.LINGER = http_limits.LINGER, 0.3
    disconnects: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        size = 0
        while scope["path"] != "/early":  # /early answers without reading the body
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnects.append(scope["path"])
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            await asyncio.sleep(float(scope["query_string"]))
        reply = b"%d" % size
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(reply))]})
        await send({"type": "http.response.body", "body": reply})

    stream = io.BytesIO()
    access = AccessLog(stream)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="uvloop", ws="none",
                            http=protocol(Limits(HEAD_LIMIT, TIMEOUT), access, lambda: "v1"),
                            lifespan="off", log_config=None, log_level="warning")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    yield Server(port, thread, stream, access, disconnects)
    uvicorn_server.should_exit = True
    thread.join(10)
    access.close()
    http_limits.LINGER = saved


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)["error"]  # type: ignore[no-any-return]


BUFFERED: dict[int, bytes] = {}  # bytes read past a reply, by socket, for the next one


def read_reply(sock: socket.socket) -> Reply:
    data = BUFFERED.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer; got {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    size = int(headers["content-length"])
    while len(body) < size:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    if body[size:]:
        BUFFERED[sock.fileno()] = body[size:]
    return Reply(int(lines[0].split()[1]), headers, body[:size])


def closed(sock: socket.socket, within: float = 2.0) -> bool:
    """Whether the server closes (or half-closes) the connection within `within` s."""
    sock.settimeout(within)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def head(size: int, path: str = "/") -> bytes:
    """A GET whose head (request line and headers, blank line included) is `size` bytes."""
    start, end = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Pad: ".encode(), b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


def assert_refused(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status
    assert reply.error()["type"] == "invalid_request_error" and reply.error()["code"] == code
    assert reply.error()["param"] is None and reply.error()["message"]
    assert re.fullmatch("[0-9a-f]{32}", reply.headers["x-gw-request-id"])
    assert reply.headers["x-gw-policy"] == "v1" and reply.headers["connection"] == "close"


# ---------------------------------------------------------------- head size


def test_a_head_at_the_limit_passes_and_one_byte_more_is_431(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(head(HEAD_LIMIT))
        assert read_reply(sock).status == 200
    with server.connect() as sock:
        sock.sendall(head(HEAD_LIMIT + 1))
        reply = read_reply(sock)
        assert_refused(reply, 431, "headers_too_large")
        assert str(HEAD_LIMIT) in reply.error()["message"]
        assert closed(sock)


@pytest.mark.parametrize("piece", [1, 100, 1000])
def test_the_limit_holds_for_a_head_in_pieces(server: Server, piece: int) -> None:
    for size, status in ((HEAD_LIMIT, 200), (HEAD_LIMIT + 1, 431)):
        data = head(size)
        with server.connect() as sock:
            sock.sendall(data[:200])  # the first read goes to the parser, the rest is collected
            time.sleep(0.01)
            rest = data[200:]
            for start in range(0, len(rest), max(piece, len(rest) // 40)):
                sock.sendall(rest[start:start + max(piece, len(rest) // 40)])
            assert read_reply(sock).status == status, size


def test_the_end_of_a_head_split_across_reads_is_found(server: Server) -> None:
    for cut in (1, 2, 3, 4):
        data = head(1000)
        with server.connect() as sock:
            sock.sendall(data[:-cut])
            time.sleep(0.02)
            sock.sendall(data[-cut:])
            assert read_reply(sock).status == 200


def test_a_body_is_not_a_head(server: Server) -> None:
    body = b"x" * (20 * HEAD_LIMIT)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body)
        reply = read_reply(sock)
        assert reply.status == 200 and reply.body == b"%d" % len(body)


def test_keep_alive_and_pipelined_requests_each_get_the_whole_limit(server: Server) -> None:
    with server.connect() as sock:
        for _ in range(3):
            sock.sendall(head(HEAD_LIMIT))
            assert read_reply(sock).status == 200
        sock.sendall(head(HEAD_LIMIT) * 3)
        assert [read_reply(sock).status for _ in range(3)] == [200, 200, 200]
        sock.sendall(head(300) + head(HEAD_LIMIT + 1))
        assert read_reply(sock).status == 200
        assert read_reply(sock).status == 431


def test_a_refusal_waits_for_the_answers_to_earlier_requests(server: Server) -> None:
    with server.connect() as sock:  # a head over the limit, pipelined behind a slow request
        sock.sendall(head(200, "/slow?0.2") + head(HEAD_LIMIT + 1))
        assert read_reply(sock).status == 200
        assert_refused(read_reply(sock), 431, "headers_too_large")
    with server.connect() as sock:  # a broken body, queued behind a slow request
        sock.sendall(head(200, "/slow?0.2") + b"POST / HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
        assert read_reply(sock).status == 200
        assert_refused(read_reply(sock), 400, "invalid_http")
        assert closed(sock)


def test_an_endless_header_costs_almost_nothing(server: Server) -> None:
    """While one client sends a header of many megabytes, another is served as ever; the
    server reads little more than the limit of it and spends little CPU on it."""
    sent, stop = [0], threading.Event()

    def flood() -> None:
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Flood: ")
            chunk = b"a" * 65536
            try:
                while sent[0] < 256 * 2**20 and not stop.is_set():
                    sock.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass  # closed on it: the gateway read no more than it had to

    cpu = server.cpu()
    flooder = threading.Thread(target=flood)
    flooder.start()
    latencies = []
    with server.connect() as sock:
        deadline = time.monotonic() + 10
        while flooder.is_alive() and time.monotonic() < deadline:
            started = time.perf_counter()
            sock.sendall(head(200))
            assert read_reply(sock).status == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
    stop.set()
    flooder.join(10)
    assert sent[0] < 256 * 2**20, "the flood was never cut off"
    assert len(latencies) > 10 and max(latencies) < 0.25, max(latencies)  # was seconds
    assert server.cpu() - cpu < 0.5
    assert any(line["status"] == 431 for line in server.logged())


# ---------------------------------------------------------------- read timeout


def test_a_slow_head_is_answered_408(server: Server) -> None:
    """Slowloris: a byte at a time, each well within the timeout, never a whole head."""
    with server.connect() as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        while not select.select([sock], [], [], 0.05)[0]:
            sock.sendall(b"X")
            assert time.monotonic() - started < 5, "the slow head was never refused"
        reply = read_reply(sock)
        elapsed = time.monotonic() - started
        assert_refused(reply, 408, "request_timeout")
        assert TIMEOUT - 0.02 <= elapsed < LATE
        assert closed(sock)


def test_a_slow_body_is_answered_408_and_the_app_sees_a_disconnect(server: Server) -> None:
    with server.connect() as sock:
        started = time.monotonic()
        sock.sendall(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" +
                     b"x" * 10)
        reply = read_reply(sock)
        assert_refused(reply, 408, "request_timeout")
        assert TIMEOUT - 0.02 <= time.monotonic() - started < LATE
    deadline = time.monotonic() + 2
    while "/body" not in server.disconnects:
        assert time.monotonic() < deadline, "the app was not told"
        time.sleep(0.01)
    line = next(line for line in reversed(server.logged()) if line["status"] == 408)
    assert line["path"] == "/body" and line["request_id"] == reply.headers["x-gw-request-id"]


def test_a_body_the_app_did_not_wait_for_gets_no_408(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" +
                     b"x" * 10)
        assert read_reply(sock).status == 200
        started = time.monotonic()
        assert closed(sock, within=2)  # the rest never came: closed, with nothing more said
        assert time.monotonic() - started < LATE
        assert BUFFERED.pop(sock.fileno(), b"") == b""


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server: Server) -> None:
    with server.connect() as sock:
        started = time.monotonic()
        assert closed(sock, within=2)
        assert TIMEOUT - 0.02 <= time.monotonic() - started < LATE


def test_the_timeout_covers_reading_not_answering_nor_waiting(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(head(200, "/slow?0.6"))  # the app takes twice the read timeout
        assert read_reply(sock).status == 200
        time.sleep(TIMEOUT * 2)  # idle between requests: keep-alive's business, not this
        sock.sendall(head(200))
        assert read_reply(sock).status == 200
        # pipelined behind a slow one, the second request waits but is not late
        sock.sendall(head(200, "/slow?0.6") + head(200))
        assert [read_reply(sock).status for _ in range(2)] == [200, 200]


# ---------------------------------------------------------------- other refusals, settings


def test_what_is_not_http_is_answered_400_in_openais_shape(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS hello
        assert_refused(read_reply(sock), 400, "invalid_http")


def test_limits_from_the_environment() -> None:
    assert Limits.from_env({}) == Limits(64 * 1024, 30.0)
    assert Limits.from_env({"GW_MAX_HEADER_BYTES": "1000", "GW_REQUEST_READ_TIMEOUT": "2.5"}) \
        == Limits(1000, 2.5)
    for env, name in (({"GW_MAX_HEADER_BYTES": "64k"}, "GW_MAX_HEADER_BYTES"),
                      ({"GW_MAX_HEADER_BYTES": "0"}, "GW_MAX_HEADER_BYTES"),
                      ({"GW_REQUEST_READ_TIMEOUT": "-1"}, "GW_REQUEST_READ_TIMEOUT"),
                      ({"GW_REQUEST_READ_TIMEOUT": "inf"}, "GW_REQUEST_READ_TIMEOUT"),
                      ({"GW_REQUEST_READ_TIMEOUT": "soon"}, "GW_REQUEST_READ_TIMEOUT")):
        with pytest.raises(ValueError, match=name):
            Limits.from_env(env)


def test_a_failing_timeout_does_not_stop_the_clock_for_the_others() -> None:
    calls: list[str] = []

    class Connection:
        def __init__(self, name: str) -> None:
            self.name = name

        def read_timed_out(self) -> None:
            calls.append(self.name)
            if self.name == "buggy":
                raise RuntimeError("a bug")

    loop = asyncio.new_event_loop()
    try:
        clock = ReadClock(loop, 0.05)
        for name in ("buggy", "slow"):
            clock.start(Connection(name))  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.sleep(0.2))
    finally:
        loop.close()
    assert sorted(calls) == ["buggy", "slow"] and clock.since == {} and clock.timer is None
