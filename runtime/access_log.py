"""JSON-lines access logs: one line per request, never a prompt or a key.

Lines are written by a thread of their own, through a bounded queue: a slow
or blocked sink (a full pipe, a stalled disk) must not stall the event loop
that serves requests. When the queue is full, lines are dropped and counted,
and the count is written once the sink drains.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Any, TextIO

import orjson

QUEUE_LINES = 10_000


class AccessLog:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.lines: queue.Queue[str | None] = queue.Queue(QUEUE_LINES)
        self.dropped = 0
        self.thread = threading.Thread(target=self._drain, name="gwc-access-log", daemon=True)
        self.thread.start()

    def write(self, **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), **fields}
        try:
            self.lines.put_nowait(orjson.dumps(record).decode() + "\n")
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every line written so far has reached the sink."""
        deadline = time.monotonic() + timeout
        while self.lines.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self.lines.put(None)
        self.thread.join(5)

    def _drain(self) -> None:
        """Write what has queued up in one go: a flush per line would cost the
        serving thread the GIL once per request."""
        closing = False
        while not closing:
            batch = [self.lines.get()]
            while len(batch) < 1000:
                try:
                    batch.append(self.lines.get_nowait())
                except queue.Empty:
                    break
            closing = None in batch
            text = "".join(line for line in batch if line is not None)
            if self.dropped:
                text = json.dumps({"ts": round(time.time(), 3), "dropped_lines": self.dropped},
                                  separators=(",", ":")) + "\n" + text
                self.dropped = 0
            self.stream.write(text)
            self.stream.flush()
            for _ in batch:
                self.lines.task_done()
