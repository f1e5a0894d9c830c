"""`gwc explain FILE --request JSON`: the plan for one request, and why."""

from __future__ import annotations

import argparse
import json
import sys

from compiler.commands import fail, load
from compiler.explain import as_text, explain
from compiler.request import Request, RequestError


def run(args: argparse.Namespace) -> int:
    try:
        request = Request.from_fields(json.loads(args.request))
    except json.JSONDecodeError as exc:
        return fail(f"--request is not JSON: {exc}")
    except RequestError as exc:
        return fail(f"--request: {exc}")
    graph = load(args.file)
    if isinstance(graph, int):
        return graph
    result = explain(graph, request)
    if args.format == "json":
        result.pop("status")
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(as_text(result))
    return 0
