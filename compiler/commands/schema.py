"""`gwc schema`: the JSON Schema every compiled graph file satisfies."""

from __future__ import annotations

import argparse
import json

from compiler.graph.document import schema


def run(args: argparse.Namespace) -> int:
    print(json.dumps(schema(), indent=2))
    return 0
