"""One module per `gwc` command, each with `run(args) -> int`, the exit code."""

from __future__ import annotations

import json
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
    if not os.path.isfile(path):
        return fail(f"cannot read '{path}'")
    if path.endswith(".json"):
        from compiler.graph.document import GraphFileError, from_json

        try:
            with open(path, encoding="utf-8") as handle:
                return from_json(json.load(handle))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, GraphFileError) as exc:
            return fail(f"{path}: {exc}", 1)
    from compiler.driver import check
    from compiler.output import Report, render

    ctx = check(os.path.normpath(path))
    if ctx.has_errors or ctx.graph is None:
        errors = [d for d in ctx.diagnostics if d.is_error]
        sys.stderr.write(render(Report(errors, ctx.sources), "text"))
        return 1
    return ctx.graph
