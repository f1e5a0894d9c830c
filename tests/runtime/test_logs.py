"""The gateway's one stream of log lines (runtime/access_log.py): access lines, lifecycle
events and logging records, from any thread, each line whole."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from runtime import access_log
from runtime.access_log import AccessLog, LogHandler, capture


class Pipe:
    """A real pipe as the sink, read by a thread of its own, like a process's stderr."""

    def __init__(self) -> None:
        read, write = os.pipe()
        self.stream: BinaryIO = os.fdopen(write, "wb")
        self.reader = os.fdopen(read, "rb")
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self) -> None:
        while chunk := self.reader.read1(65536):
            self.chunks.append(chunk)

    def lines(self) -> list[dict[str, Any]]:
        self.stream.close()
        self.thread.join(10)
        self.reader.close()
        text = b"".join(self.chunks)
        assert text.endswith(b"\n")
        return [json.loads(line) for line in text.split(b"\n")[:-1]]


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    sink = Pipe()
    yield sink
    if not sink.stream.closed:
        sink.lines()


def test_lines_from_every_thread_and_the_loop_stay_whole(pipe: Pipe) -> None:
    log = AccessLog(pipe.stream)
    logger = logging.getLogger("gwc.test-logs")
    logger.propagate = False
    handler = LogHandler(log)
    logger.addHandler(handler)
    requests, events, records = 20_000, 500, 500
    try:
        def serving() -> None:  # the serving thread's part: access lines, some long
            for i in range(requests):
                log.write({"request_id": f"{i:032x}", "path": "/v1/chat/completions",
                           "status": 200, "error": "e" * (i % 7 * 1000) or None})

        def elsewhere() -> None:  # a reload thread's part: lifecycle events and records
            for i in range(events):
                log.event("reload", f"gwc: reload loaded: v{i}", outcome="loaded")
            for i in range(records):
                try:
                    raise ValueError(f"failure {i}\nwith a second line")
                except ValueError:
                    logger.exception("unexpected error %d", i)

        async def loop() -> None:  # and the event loop's, between its own awaits
            for i in range(events):
                log.event("serving", f"gwc: serving on the loop {i}")
                logger.warning("from the loop %d", i)
                await asyncio.sleep(0)

        threads = [threading.Thread(target=serving), threading.Thread(target=elsewhere),
                   threading.Thread(target=asyncio.run, args=(loop(),))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        log.close()
    finally:
        logger.removeHandler(handler)
    lines = pipe.lines()  # each one parsed whole, or this fails
    assert sum("request_id" in line for line in lines) == requests
    assert sum(line.get("event") == "reload" for line in lines) == events
    assert sum(line.get("event") == "serving" for line in lines) == events
    failures = [line for line in lines if line.get("message", "").startswith("unexpected")]
    assert len(failures) == records
    assert all(line["level"] == "error" and line["logger"] == "gwc.test-logs" and
               "Traceback" in line["exception"] and "with a second line" in line["exception"]
               for line in failures)
    assert sum(line.get("message", "").startswith("from the loop") for line in lines) == events
    assert all("ts" in line for line in lines)


def test_a_record_that_cannot_be_formatted_is_still_a_line() -> None:
    stream = ListStream()
    log = AccessLog(stream)  # type: ignore[arg-type]
    record = logging.LogRecord("gwc", logging.ERROR, __file__, 1, "%d items", ("many",), None)
    LogHandler(log).handle(record)
    log.close()
    line = json.loads(stream.lines[0])
    assert line["event"] == "log" and "%d items" in line["message"]


class ListStream:
    def __init__(self, blocked: threading.Event | None = None) -> None:
        self.lines: list[bytes] = []
        self.blocked = blocked

    def writelines(self, lines: list[bytes]) -> None:
        if self.blocked is not None:
            self.blocked.wait(10)
        self.lines += lines

    def flush(self) -> None:
        pass


def test_a_stalled_sink_stalls_no_writer_and_drops_are_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_log, "MAX_PENDING", 1000)
    release = threading.Event()
    stream = ListStream(release)
    log = AccessLog(stream)  # type: ignore[arg-type]
    log.write({"request_id": "first"})
    time.sleep(access_log.PERIOD * 2)  # the writer takes it and blocks in the sink
    started = time.perf_counter()
    for i in range(3000):
        log.write({"request_id": f"{i}"})
        log.event("reload", "gwc: reload loaded: v")
    assert time.perf_counter() - started < 1.0
    release.set()
    log.close()
    lines = [json.loads(line) for line in stream.lines]
    dropped = [line for line in lines if line.get("event") == "dropped"]
    assert len(dropped) == 1 and dropped[0]["dropped_lines"] == 6000 - 1000
    assert "dropped" in dropped[0]["message"]
    assert len(lines) == 1 + 1000 + 1


def test_by_default_every_line_reaches_stderr_and_a_stderr_without_a_descriptor_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stderr", "w") as stderr:
        monkeypatch.setattr(sys, "stderr", stderr)
        log = AccessLog()  # stderr's descriptor behind a buffer of its own
        for i in range(5000):  # several rounds' worth, past any one buffer of stderr's
            log.write({"request_id": f"{i:032x}", "error": "e" * (i % 5 * 300) or None})
        log.flush()
        log.close()
    lines = (tmp_path / "stderr").read_bytes().split(b"\n")
    assert lines[-1] == b"" and [json.loads(line)["request_id"] for line in lines[:-1]] == \
        [f"{i:032x}" for i in range(5000)]
    captured = io.TextIOWrapper(io.BytesIO())  # a test's stand-in: fileno() refuses
    monkeypatch.setattr(sys, "stderr", captured)
    log = AccessLog()
    log.write({"request_id": "b"})
    log.flush()
    log.close()
    assert json.loads(captured.buffer.getvalue())["request_id"] == "b"  # type: ignore[attr-defined]


def test_a_broken_sink_does_not_end_the_writer() -> None:
    class Broken(ListStream):
        def writelines(self, lines: list[bytes]) -> None:
            raise BrokenPipeError

    log = AccessLog(Broken())  # type: ignore[arg-type]
    log.write({"request_id": "a"})
    log.flush(1)
    assert log.thread.is_alive()
    log.close()


def test_capture_routes_logging_warnings_and_thread_failures_to_the_log() -> None:
    stream = ListStream()
    log = AccessLog(stream)  # type: ignore[arg-type]
    before = threading.excepthook
    release = capture(log)
    try:  # a library's logger (uvicorn's, in `gwc serve`) reaches the root's handler
        logging.getLogger("tests.a-library").warning("Invalid HTTP request received.")
        logging.getLogger("gwc").info("below the level: not logged")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a deprecated thing", DeprecationWarning, stacklevel=1)

        def fail() -> None:
            raise RuntimeError("a thread's bug")

        thread = threading.Thread(target=fail, name="worker")
        thread.start()
        thread.join()
    finally:
        release()
    log.close()
    lines = [json.loads(line) for line in stream.lines]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("tests.a-library", "warning"), ("py.warnings", "warning"), ("gwc", "error")]
    assert "a deprecated thing" in lines[1]["message"]
    assert "worker" in lines[2]["message"] and "a thread's bug" in lines[2]["exception"]
    assert threading.excepthook is before
