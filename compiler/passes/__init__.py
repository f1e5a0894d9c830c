"""The compiler's passes, in the order they run.

Like OPA's `compile.go`, a table of named stages: each module's `run(ctx)`
reads what the stages before it left in the context and reports into it.
Ordering matters: names can only be resolved once collected, conditions are
lowered once attribute types are known, and the lints that need exact
analysis read the lowered policy.

A file with syntax errors still goes through every pass: LoadImports keeps
the declarations the errors left whole, and the passes check those (see
`Context.may_have_lost`). Only the decision graph, and so the analyses read
off it, waits for a policy that parses.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from compiler.context import Context
from compiler.passes import (
    attributes,
    collect,
    conditions,
    graph,
    guard_shadowing,
    imports,
    lints,
    lower,
    resolve,
    shadowing,
)

Pass = tuple[str, Callable[[Context], None]]

PASSES: list[Pass] = [
    ("LoadImports", imports.run),         # parse the file and all it imports; cycles
    ("CollectDeclarations", collect.run),  # names by kind; duplicates; one route
    ("CheckAttributes", attributes.run),   # known attributes, types and units, ranges
    ("ResolveNames", resolve.run),         # every reference names a declaration
    ("CheckConditions", conditions.run),   # attributes, operators, literals, regexes
    ("LowerPolicy", lower.run),            # the typed, resolved policy
    ("BuildGraph", graph.run),             # the decision graph the analyses read
    ("Lint", lints.run),                   # chains, pools, prices, env, plain http
    ("FindShadowedRules", shadowing.run),  # exact, over the decision graph
    ("FindShadowedGuards", guard_shadowing.run),  # guards that never act, over its leaves
]


def run_passes(ctx: Context, timings: dict[str, float] | None = None) -> Context:
    for name, run in PASSES:
        started = time.perf_counter()
        run(ctx)
        if timings is not None:
            timings[name] = time.perf_counter() - started
    return ctx
