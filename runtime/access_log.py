"""JSON-lines access logs: one line per request, never a prompt or a key.

The serving thread only appends each line to a list; a writer thread of its
own wakes ten times a second, takes the list whole and hands its lines to a
binary stream's buffer. (Joining them first, and decoding for a text stream,
made copies of a hundred kilobytes and more at each round under load, each
one fresh memory from the system: about 15 us a request, bench.overhead.)
So a slow or blocked sink (a full pipe, a stalled disk) cannot stall the event
loop, and the two threads do not trade the GIL once per request. Past
MAX_PENDING unwritten lines, new ones are dropped and counted, and the count
is logged once the sink drains.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, BinaryIO

import orjson

MAX_PENDING = 100_000
PERIOD = 0.1  # seconds between the writer's rounds


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream or sys.stderr.buffer
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
        lines, self.pending = self.pending, []
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            lines.append(orjson.dumps({"ts": _now(), "dropped_lines": dropped},
                                      option=orjson.OPT_APPEND_NEWLINE))
        if lines:
            self.stream.writelines(lines)
            self.stream.flush()
            self.written += len(lines)


def _now() -> float:
    """Seconds since the epoch to the millisecond (round() is several times slower)."""
    return int(time.time() * 1000) / 1000
