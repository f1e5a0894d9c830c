"""JSON-lines access logs: one line per request, never a prompt or a key."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class AccessLog:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def write(self, **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), **fields}
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.stream.flush()
