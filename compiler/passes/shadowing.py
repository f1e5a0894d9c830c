"""FindShadowedRules: route rules no request can reach, and who takes their requests.

Exact over the condition fragment: a rule is shadowed when no leaf of the
decision graph is won by it. For each one, the rules before it are compiled
again restricted to its own condition; the winners there are the rules that
take its requests. `matches` is opaque to this, and is read conservatively:
it can hide a shadowed rule, never invent one.
"""

from __future__ import annotations

from compiler.conditions import all_of
from compiler.context import Context
from compiler.graph.build import Builder, Matrix
from compiler.policy import Rule
from dsl.diagnostics import Related, warning
from dsl.span import Span


def run(ctx: Context) -> None:
    if ctx.graph is None:
        return
    rules = ctx.policy.rules
    winners = {plan.rule for plan in ctx.graph.plans}
    for rule in rules:
        if rule.index in winners:
            continue
        takers = _takers(rules[: rule.index], rule)
        where = _span(rule)
        if not takers:
            ctx.report(warning("GW301", "rule can never match: no request satisfies its "
                                        "condition", where,
                               help="the condition contradicts itself; fix or remove the rule"))
            continue
        places = [f"{t.source.line}:{t.source.column}" for t in takers]
        listed = places[0] if len(places) == 1 else ", ".join(places[:-1]) + " and " + places[-1]
        noun = "rule" if len(places) == 1 else "rules"
        ctx.report(warning(
            "GW301", f"rule can never match: every request it matches is taken by the {noun} "
                     f"at {listed}", where,
            help="move it above the rule that takes its requests, or remove it",
            related=[Related(_span(t), "takes its requests") for t in takers]))


def _takers(before: list[Rule], rule: Rule) -> list[Rule]:
    """The earlier rules that win some request that `rule` matches."""
    conds = [all_of([r.cond, rule.cond]) for r in before]
    builder = Builder(Matrix(len(before), 0, 0, 0), conds)
    builder.build()
    won = sorted({p.rule for p in builder.plans if p.rule is not None})
    return [before[i] for i in won]


def _span(rule: Rule) -> Span:
    where = rule.source
    return Span(where.file, where.line, where.column, where.end_line, where.end_column)
