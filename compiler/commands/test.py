"""`gwc test FILE...`: run each policy's `test` blocks against its compiled graph."""

from __future__ import annotations

import argparse

from compiler.commands import load
from compiler.explain import explain
from compiler.graph import Graph
from compiler.policy import TestCase
from compiler.request import Request, RequestError


def failure(graph: Graph, case: TestCase) -> str | None:
    """Why a test fails, or None when it passes."""
    try:
        request = Request.from_fields(case.given)
    except RequestError as exc:
        return f"given: {exc}"
    result = explain(graph, request)
    problems = []
    if "route" in case.expect and result["route"] != case.expect["route"]:
        problems.append(f"expected route [{', '.join(case.expect['route'])}], "  # type: ignore[arg-type]
                        f"got [{', '.join(result['route'])}]"
                        + (f" (denied: \"{result['deny']}\")" if result["deny"] else ""))
    if "deny" in case.expect and result["deny"] != case.expect["deny"]:
        got = f"\"{result['deny']}\"" if result["deny"] else "no deny"
        problems.append(f"expected deny \"{case.expect['deny']}\", got {got}")
    if "cache" in case.expect and (result["cache"] is not None) != case.expect["cache"]:
        problems.append(f"expected cache {str(case.expect['cache']).lower()}, got "
                        f"{str(result['cache'] is not None).lower()}")
    return "; ".join(problems) or None


def run(args: argparse.Namespace) -> int:
    passed = failed = 0
    for path in args.files:
        graph = load(path)
        if isinstance(graph, int):
            failed += 1
            print(f"FAIL {path}: the policy does not check")
            continue
        for case in graph.policy.tests:
            problem = failure(graph, case)
            where = f"{case.source.file}:{case.source.line}"
            if problem is None:
                passed += 1
                print(f"PASS {where}: {case.name}")
            else:
                failed += 1
                print(f"FAIL {where}: {case.name}: {problem}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
