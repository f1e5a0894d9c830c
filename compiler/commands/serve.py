"""`gwc serve FILE`: hands over to the runtime, which only this command imports."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from runtime.serve import run as serve

    return serve(args.file, args.host, args.port, args.watch, args.insecure)
