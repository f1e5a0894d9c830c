"""FindShadowedGuards: guards that can never act, and the guard that acts first.

Read off the decision graph's leaves, whose plans list every guard that
applies to the requests reaching them. A guard in no plan applies to no
request: its `when` contradicts itself. A guard is shadowed by an earlier one
(policy order) when every leaf that lists it lists the earlier one too, and
the earlier one refuses whatever this one could act on (`covers`). `matches`
is opaque to the graph: a leaf only a regex tells apart from its neighbours
counts as reachable, so a regex can hide a shadowed guard, never invent one.

A guard with an attribute that failed to check (or that it does not know)
is left out, as shadowed and as shadowing: lowered without it, it would not
be the guard that was written.
"""

from __future__ import annotations

from compiler.context import Context
from compiler.policy import Guard
from dsl import ast
from dsl.diagnostics import Related, warning


def covers(earlier: Guard, later: Guard) -> bool:
    """Whether `earlier` refuses every request `later` could act on, where both apply.

    It must enforce, check every direction `later` does, hold all of `later`'s
    patterns, and refuse on all of its detectors; a webhook `later` calls must be
    `earlier`'s too, failing closed within no longer a wait, since a hook is taken
    to answer the same text the same way.
    """
    if earlier.mode != "enforce" or earlier.on not in ("both", later.on):
        return False
    if not set(later.deny) <= set(earlier.deny):
        return False
    if later.detect and (earlier.action != "deny" or not set(later.detect) <= set(earlier.detect)):
        return False
    return later.webhook is None or (later.webhook == earlier.webhook and
                                     earlier.on_error == "deny" and
                                     earlier.timeout <= later.timeout)


def run(ctx: Context) -> None:
    if ctx.graph is None:
        return
    guards = ctx.policy.guards
    whole = [_whole(ctx, ctx.guards[g.name]) for g in guards]
    plans = [set(plan.guards) for plan in ctx.graph.plans if plan.guards]
    for guard in guards:
        decl = ctx.guards[guard.name]
        with_it = [plan for plan in plans if guard.index in plan]
        if not with_it:
            where = decl.cond.span if decl.cond is not None else decl.header
            ctx.report(warning("GW315", f"guard '{guard.name}' never applies: no request "
                                        "satisfies its condition", where,
                               help="the condition contradicts itself; fix or remove the guard"))
            continue
        if not whole[guard.index] or not (guard.detect or guard.deny or guard.webhook):
            continue  # what it was meant to check is unknown (GW108 or a bad attribute)
        first = next((earlier for earlier in guards[:guard.index]
                      if whole[earlier.index] and covers(earlier, guard) and
                      all(earlier.index in plan for plan in with_it)), None)
        if first is None:
            continue
        ctx.report(warning(
            "GW315", f"guard '{guard.name}' never acts: the guard '{first.name}' at "
                     f"{first.source.line}:{first.source.column} refuses everything it checks "
                     "for, on every request it applies to", decl.header,
            help=f"remove it, or narrow '{first.name}' (its `when`, `on`, `detect` or `deny`)",
            related=[Related(ctx.guards[first.name].header, "refuses first")]))


def _whole(ctx: Context, decl: ast.GuardDecl) -> bool:
    """Whether every member of the guard checked, so that its lowering is what it says."""
    return all(isinstance(m, ast.Attribute) and id(m) in ctx.values for m in decl.body.members)
