"""FindShadowedRules: route rules no request can reach, and who takes their requests.

Exact over the condition fragment: a rule is shadowed when no leaf of the
decision graph is won by it. Its takers are the rules its own condition's
requests reach (`compiler.graph.reach`). `matches` is opaque to this and read
conservatively: it can hide a shadowed rule, never invent one.
"""

from __future__ import annotations

from compiler.context import Context
from compiler.graph.reach import rules_reached
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
        reached = rules_reached(ctx.graph, rule.cond)
        takers = [rules[i] for i in sorted(i for i in reached if i is not None)]
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


def _span(rule: Rule) -> Span:
    where = rule.source
    return Span(where.file, where.line, where.column, where.end_line, where.end_column)
