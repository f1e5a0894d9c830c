"""One module per `gwc` command, each with `run(args) -> int`, the exit code."""

from __future__ import annotations

import sys


def fail(message: str, code: int = 2) -> int:
    """A usage or input problem: one line on standard error, no traceback."""
    print(f"gwc: {message}", file=sys.stderr)
    return code
