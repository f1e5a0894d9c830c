"""`gwc diff OLD NEW`: the classes of requests whose plan changes, as a CI gate.

Exit 0 when no `--fail-on` kind is present; 1 when one is, or when either
policy has errors (they are printed as `gwc check` prints them); 2 for a
usage problem: an unknown kind, an unreadable file or traffic log.
"""

from __future__ import annotations

import argparse
import os
import sys

from compiler.commands import fail
from compiler.diff import KINDS, Differ
from compiler.diff.render import render
from compiler.driver import check
from compiler.graph import Graph
from compiler.output import Report
from compiler.output import render as render_diagnostics
from compiler.traffic import Logged, TrafficError, read
from dsl.source import SourceError, read_source


def _kinds(text: str | None) -> list[str] | int:
    if not text:
        return []
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        return fail(f"--fail-on: unknown kind '{unknown[0]}' (known: {', '.join(KINDS)})")
    return kinds


def _graphs(paths: list[str], fmt: str) -> list[Graph] | int:
    for path in paths:
        try:
            read_source(path)
        except SourceError as exc:
            return fail(f"cannot read '{path}': {exc}")
    graphs = []
    for path in paths:
        ctx = check(os.path.normpath(path), os.environ)
        if ctx.has_errors or ctx.graph is None:
            shown = fmt if fmt in ("text", "json", "sarif", "github") else "text"
            sys.stdout.write(render_diagnostics(Report(ctx.diagnostics, ctx.sources), shown))
            return 1
        graphs.append(ctx.graph)
    return graphs


def _traffic(path: str) -> list[Logged] | int:
    try:
        with open(path, encoding="utf-8") as handle:
            return list(read(handle))
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"cannot read '{path}': {exc}")
    except TrafficError as exc:
        return fail(f"{path}: {exc}")


def run(args: argparse.Namespace) -> int:
    kinds = _kinds(args.fail_on)
    if isinstance(kinds, int):
        return kinds
    logged = _traffic(args.traffic) if args.traffic else None
    if isinstance(logged, int):
        return logged
    graphs = _graphs([args.old, args.new], args.format)
    if isinstance(graphs, int):
        return graphs
    differ = Differ(*graphs)
    found = differ.changes()
    if logged is not None:
        differ.weigh(found, logged)
    sys.stdout.write(render(found, args.format))
    return 1 if any(item.change.kind in kinds for item in found) else 0
