"""`gwc explain-code GWnnn`: the long form of a diagnostic, with examples."""

from __future__ import annotations

import argparse

from compiler import codes
from compiler.commands import fail


def run(args: argparse.Namespace) -> int:
    try:
        entry = codes.lookup(args.code)
    except KeyError:
        return fail(f"unknown code '{args.code}'; codes are {', '.join(codes.known())}")
    print(f"{entry.code}: {entry.title} ({entry.level})\n\n{entry.body}")
    return 0
