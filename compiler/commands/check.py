"""`gwc check FILE...`: every problem in every file, in the chosen format.

A file that another given file imports is checked as part of that one, not
on its own: `gwc check examples/*.gw` checks a shared `common.gw` through the
policies that import it. A path that is not a regular file of at most
`dsl.source.MAX_BYTES` is refused with exit code 2, like a missing one.
"""

from __future__ import annotations

import argparse
import os
import sys

from compiler.commands import fail
from compiler.context import Context
from compiler.driver import check
from compiler.output import Report, render
from dsl.diagnostics import Diagnostic, sort_key
from dsl.source import SourceError, read_source


def checked(files: list[str]) -> tuple[list[Context], int | None]:
    """Check each file as a root, dropping roots another root imports."""
    for path in files:
        try:
            read_source(path)  # a FIFO or a device is refused here, not waited on
        except SourceError as exc:
            return [], fail(f"cannot read '{path}': {exc}")
    contexts = [check(os.path.normpath(path)) for path in dict.fromkeys(files)]
    roots = []
    for ctx in contexts:
        if not any(ctx.root in other.sources for other in contexts if other is not ctx):
            roots.append(ctx)
    return roots or contexts, None


def run(args: argparse.Namespace) -> int:
    contexts, error = checked(args.files)
    if error is not None:
        return error
    seen: set[tuple[object, ...]] = set()
    diagnostics: list[Diagnostic] = []
    sources: dict[str, str] = {}
    for ctx in contexts:
        sources.update(ctx.sources)
        for d in ctx.diagnostics:
            key = (d.span, d.code, d.message)
            if key not in seen:
                seen.add(key)
                diagnostics.append(d)
    diagnostics.sort(key=sort_key)
    color = args.format == "text" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    report = Report(diagnostics, sources, color)
    sys.stdout.write(render(report, args.format))
    failed = report.errors > 0 or (args.strict and report.warnings > 0)
    return 1 if failed else 0
