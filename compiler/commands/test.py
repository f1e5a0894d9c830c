"""`gwc test FILE...`: run each policy's `test` blocks against its compiled graph.

`expect { guards = [a, b] }` holds when exactly those guards apply, in any
order: they all run, in the policy's order, whatever order the test names them in.
"""

from __future__ import annotations

import argparse
import sys

from compiler.commands.check import checked
from compiler.explain import explain
from compiler.graph import Graph
from compiler.output import Report, render
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
    if "guards" in case.expect:
        named = [g["name"] for g in result["guards"]]
        expected: list[str] = case.expect["guards"]  # type: ignore[assignment]
        if set(named) != set(expected):
            problems.append(f"expected guards [{', '.join(expected)}], "
                            f"got [{', '.join(named)}]")
    return "; ".join(problems) or None


def run(args: argparse.Namespace) -> int:
    """Files that another given file imports are tested through it, as with `check`."""
    contexts, error = checked(args.files)
    if error is not None:
        return error
    passed = failed = 0
    for ctx in contexts:
        graph = ctx.graph
        if ctx.has_errors or graph is None:
            failed += 1
            errors = [d for d in ctx.diagnostics if d.is_error]
            sys.stderr.write(render(Report(errors, ctx.sources), "text"))
            print(f"FAIL {ctx.root}: the policy does not check")
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
