"""`gwc fmt FILE...`: rewrite in canonical layout; `--check` and `--diff` write nothing.

Each file that changes gets a line on standard output; a summary of all of
them goes to standard error (so that `--diff` stays a clean patch), saying
so when every file is already formatted.
"""

from __future__ import annotations

import argparse
import difflib
import sys

from compiler.commands import fail
from compiler.output import Report, render
from dsl.format import format_module
from dsl.parser import decode, parse
from dsl.source import SourceError, read_source


def run(args: argparse.Namespace) -> int:
    changed = broken = 0
    for path in args.files:
        try:
            data = read_source(path)
        except SourceError as exc:
            return fail(f"cannot read '{path}': {exc}")
        text, diagnostics = decode(data, path)
        module = None
        if text is not None:
            module, diagnostics = parse(text, path)
        if module is None or text is None:
            broken += 1
            sys.stderr.write(render(Report(diagnostics, {path: text or ""}), "text"))
            continue
        formatted = format_module(module, text)
        if formatted == text:
            continue
        changed += 1
        if args.check:
            print(f"would reformat {path}")
        elif args.diff:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(keepends=True), formatted.splitlines(keepends=True),
                f"a/{path}", f"b/{path}"))
        else:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(formatted)
            print(f"reformatted {path}")
    unchanged = len(args.files) - changed - broken
    sys.stderr.write(_summary(changed, unchanged, broken, args.check or args.diff) + "\n")
    if broken:
        return 1
    return 1 if args.check and changed else 0


def _summary(changed: int, unchanged: int, broken: int, dry_run: bool) -> str:
    """`3 files already formatted`, `1 file would be reformatted, 2 files already formatted`."""
    def files(count: int) -> str:
        return f"{count} file" + ("" if count == 1 else "s")
    parts = []
    if changed:
        parts.append(files(changed) + (" would be reformatted" if dry_run else " reformatted"))
    if unchanged or not (changed or broken):
        parts.append(files(unchanged) + " already formatted")
    if broken:
        parts.append(files(broken) + " left alone: syntax errors")
    return ", ".join(parts)
