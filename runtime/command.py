"""`gwc serve`: the one command of the runtime's, found by the CLI as an entry point.

The CLI lives in the compiler, which must not import the runtime; it finds
this command through the `gwc.commands` entry point group instead, so the
arrow runs from the runtime to the compiler only.
"""

from __future__ import annotations

import argparse


def serve(args: argparse.Namespace) -> int:
    from runtime.serve import run

    return run(args.file, args.host, args.port, args.watch, args.insecure, args.workers)
