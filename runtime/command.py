"""`gwc serve`, `keys`, `spend`, `log` and `simulate`: the runtime's commands, found by the CLI as
entry points.

The CLI lives in the compiler, which must not import the runtime; it finds
this command through the `gwc.commands` entry point group instead, so the
arrow runs from the runtime to the compiler only.
"""

from __future__ import annotations

import argparse


def serve(args: argparse.Namespace) -> int:
    from runtime.serve import run

    return run(args.file, args.host, args.port, args.watch, args.insecure, args.workers)


def keys(args: argparse.Namespace) -> int:
    from runtime.records_commands import keys as run

    return run(args)


def spend(args: argparse.Namespace) -> int:
    from runtime.records_commands import spend as run

    return run(args)


def log(args: argparse.Namespace) -> int:
    from runtime.records_commands import log_export

    return log_export(args)


def simulate(args: argparse.Namespace) -> int:
    from runtime.simulate_command import run

    return run(args)
