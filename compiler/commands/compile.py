"""`gwc compile FILE -o graph.json`: the decision graph, schema-checked, as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from compiler.commands import fail, load
from compiler.graph.document import to_json


def run(args: argparse.Namespace) -> int:
    graph = load(args.file)
    if isinstance(graph, int):
        return graph
    text = json.dumps(to_json(graph), separators=(",", ":")) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        return fail(f"cannot write '{args.output}': {exc.strerror}", 1)
    print(f"wrote {args.output}: {len(graph.nodes)} nodes, {len(graph.plans)} plans, "
          f"policy {graph.version}", file=sys.stderr)
    return 0
