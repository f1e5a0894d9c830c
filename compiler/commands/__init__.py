"""One module per `gwc` command, each with `run(args) -> int`, the exit code."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compiler.graph import Graph


def fail(message: str, code: int = 2) -> int:
    """A usage or input problem: one line on standard error, no traceback."""
    print(f"gwc: {message}", file=sys.stderr)
    return code


def load(path: str) -> Graph | int:
    """A runnable graph from a policy or a compiled graph file, or an exit code
    after saying on standard error what is wrong with it."""
    from compiler.compiled import Refused
    from compiler.compiled import load as load_policy

    if path.endswith(".json"):  # a graph can be larger than any policy
        if not os.path.isfile(path):
            return fail(f"cannot read '{path}'")
    else:
        from dsl.source import SourceError, read_source

        try:
            read_source(path)  # a FIFO, a device or a huge file is refused, not read
        except SourceError as exc:
            return fail(f"cannot read '{path}': {exc}")
    try:
        return load_policy(path, os.environ).graph
    except Refused as refusal:
        sys.stderr.write(refusal.report)
        return 1
