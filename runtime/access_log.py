"""JSON-lines access logs: one line per request, never a prompt or a key; and the one
writer of everything else the gateway says on standard error.

The serving thread only appends each line to a list; a writer thread of its
own wakes ten times a second, takes the list whole and hands its lines to a
binary stream's buffer. (Joining them first, and decoding for a text stream,
made copies of a hundred kilobytes and more at each round under load, each
one fresh memory from the system: about 15 us a request, bench.overhead.)
Standard error is written through a buffer of SINK_BUFFER bytes of its own,
so that a round is one write to the file, not one per 8 kB of stderr's: each
write hands the GIL back, and taking it back from a busy event loop costs the
loop a switch (about 3,000 a second under load, a tenth of the throughput).
So a slow or blocked sink (a full pipe, a stalled disk) cannot stall the event
loop, and the two threads do not trade the GIL once per request. Past
MAX_PENDING unwritten lines, new ones are dropped and counted, and the count
is logged once the sink drains.

Lifecycle messages (`event`: serving, reloads, stopping) and Python logging
records (`LogHandler`, installed with `capture`) are lines of the same list, so
they leave by the same writer, each line whole, never spliced into an access
line as two writers on one stream would. Every line is a JSON object: an
access line has a `request_id`; any other has an `event` and a `message`
meant for people.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

MAX_PENDING = 100_000
PERIOD = 0.1  # seconds between the writer's rounds
SINK_BUFFER = 1 << 21  # bytes: a round's lines under any load the gateway serves


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream or _stderr()
        self.pending: list[bytes] = []
        self.dropped = 0
        self.written = 0  # lines handed to the sink, for flush
        self.appended = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gwc-access-log", daemon=True)
        self.thread.start()

    def write(self, fields: dict[str, Any]) -> None:
        """Log one line: `fields`, and the time, as JSON."""
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        fields["ts"] = _now()
        # list.append: atomic under the GIL
        self.pending.append(orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE))
        self.appended += 1

    def event(self, event: str, message: str, **fields: Any) -> None:
        """Log one line that is not a request's: `{"event", "message", **fields, "ts"}`.
        `message` is for people (e.g. "gwc: reload loaded: 3f2a..."); any thread may call
        this. Past MAX_PENDING unwritten lines it is dropped and counted, like a request's."""
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        line = {"event": event, "message": message, **fields, "ts": _now()}
        self.pending.append(orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE))
        self.appended += 1

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every line written so far has reached the sink."""
        target = self.appended
        deadline = time.monotonic() + timeout
        while self.written < target and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)

    def _run(self) -> None:
        while not self.stopping.wait(PERIOD):
            self._write_pending()
        self._write_pending()

    def _write_pending(self) -> None:
        # Take the lines from the list, not the list: a `write` that had loaded
        # `self.pending` when this thread swapped it would append to the old list
        # after it was written, and that line would be lost. A slice and its
        # deletion are each one step under the GIL; lines appended between stay.
        pending = self.pending
        count = len(pending)
        lines = pending[:count]
        del pending[:count]
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            lines.append(orjson.dumps(
                {"event": "dropped", "message": f"gwc: {dropped} log lines dropped: the sink "
                 "is not keeping up", "dropped_lines": dropped, "ts": _now()},
                option=orjson.OPT_APPEND_NEWLINE))
        if lines:
            try:
                self.stream.writelines(lines)
                self.stream.flush()
            except (OSError, ValueError):  # a broken or closed sink: the thread carries on
                self.dropped += len(lines)
            self.written += len(lines)


def _stderr() -> BinaryIO:
    """Standard error's descriptor behind a buffer of SINK_BUFFER (left open at the end);
    stderr's own buffer where it has no descriptor (replaced by a test's, say)."""
    try:
        descriptor = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stderr.buffer
    sys.stderr.flush()
    return open(descriptor, "wb", buffering=SINK_BUFFER, closefd=False)


def _now() -> float:
    """Seconds since the epoch to the millisecond (round() is several times slower)."""
    return int(time.time() * 1000) / 1000


class LogHandler(logging.Handler):
    """Hands Python logging records to an AccessLog, as `"event": "log"` lines with the
    level, the logger's name and, where there is one, the traceback as one string."""

    def __init__(self, log: AccessLog, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.log = log
        self.traceback = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        fields: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name}
        if record.exc_info:
            fields["exception"] = self.traceback.formatException(record.exc_info)
        if record.stack_info:
            fields["stack"] = record.stack_info
        self.log.event("log", message, **fields)


def capture(log: AccessLog, level: int = logging.WARNING) -> Callable[[], None]:
    """Make `log` the writer of every line the process would write to standard error:
    logging records (a handler on the root logger, taking `level` and above), warnings,
    and exceptions that escape a thread or cannot be raised. Returns what undoes it."""
    handler = LogHandler(log, level)
    root = logging.getLogger()
    saved_hooks = threading.excepthook, sys.unraisablehook
    root.addHandler(handler)
    logging.captureWarnings(True)
    errors = logging.getLogger("gwc")

    def thread_failed(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        errors.error("exception in thread %s", args.thread.name if args.thread else "?",
                     exc_info=args.exc_value)

    def unraisable(args: sys.UnraisableHookArgs) -> None:
        errors.error("%s: %r", args.err_msg or "Exception ignored in", args.object,
                     exc_info=args.exc_value)

    threading.excepthook, sys.unraisablehook = thread_failed, unraisable

    def undo() -> None:
        threading.excepthook, sys.unraisablehook = saved_hooks
        logging.captureWarnings(False)
        root.removeHandler(handler)

    return undo
