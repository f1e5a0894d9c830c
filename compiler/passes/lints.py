"""Lint: mistakes that type-check but would hurt in production.

Chains that repeat a target or bury a `deny`, empty pools, budgets over
models with no price (the budget could never count their spend), requests no
rule matches, `env()` variables unset here, and plain `http://` to a host
other than this one.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from compiler.conditions import TRUE, all_of
from compiler.context import Context
from compiler.graph.build import subject_cond
from compiler.graph.reach import rules_reached
from compiler.policy import Policy, Target
from dsl import ast
from dsl.diagnostics import Related, error, warning
from dsl.span import Span

LOOPBACK = ("localhost", "::1")


def run(ctx: Context) -> None:
    _chains(ctx)
    _pools(ctx)
    _unpriced(ctx)
    _unmatched(ctx)
    for attribute in _attributes(ctx):
        _env(ctx, attribute.value)
        _plain_http(ctx, attribute)


def _chains(ctx: Context) -> None:
    if ctx.route is None:
        return
    for rule in ctx.route.rules:
        seen: dict[str, ast.Target] = {}
        for target in rule.targets:
            if isinstance(target, ast.Deny) and len(rule.targets) > 1:
                ctx.report(error("GW304", "'deny' must be the only target of its rule",
                                 target.span, help="a denied request goes nowhere else; "
                                                   "drop the other targets or the deny"))
            name = target.name if isinstance(target, ast.ModelTarget) else \
                "requested" if isinstance(target, ast.Requested) else None
            if name is None:
                continue
            if name in seen:
                ctx.report(warning("GW303", f"'{name}' is already in this chain", target.span,
                                   help="a failed target is not tried twice; remove the repeat",
                                   related=[Related(seen[name].span, "first here")]))
            seen[name] = target


def _pools(ctx: Context) -> None:
    for pool in ctx.named.get("pool", {}).values():
        members = pool.body.attributes().get("members")
        if members is not None and id(members) in ctx.values and not ctx.values[id(members)]:
            ctx.report(error("GW306", f"pool '{pool.name.name}' has no members", members.span,
                             help="list the models it balances over: `members = [a, b]`"))


def models_of(policy: Policy, targets: tuple[Target, ...]) -> Iterator[str]:
    for target in targets:
        if target.kind == "model":
            yield target.name
        elif target.kind == "pool":
            yield from (m.model for m in policy.pools[target.name].members)
        else:
            yield from policy.models


def _unpriced(ctx: Context) -> None:
    """A budget counts spend from prices: a model without one slips past it."""
    policy, graph = ctx.policy, ctx.graph
    if graph is None:
        return
    subjects = [b.subject for b in policy.budgets]
    reported: set[str] = set()
    for budget in policy.budgets:
        cond = all_of([subject_cond(budget.subject, subjects), budget.cond])
        reached = sorted(r for r in rules_reached(graph, cond) if r is not None)
        names = [m for r in reached for m in models_of(policy, policy.rules[r].targets)]
        if budget.downgrade:
            kind = "pool" if budget.downgrade in policy.pools else "model"
            names += models_of(policy, (Target(kind, budget.downgrade),))
        for name in names:
            model = policy.models.get(name)
            if model is None or model.priced or name in reported:
                continue
            reported.add(name)
            where = budget.source
            ctx.report(error(
                "GW305", f"model '{name}' has no price, so the budget at "
                         f"{where.line}:{where.column} cannot be enforced",
                ctx.named["model"][name].span,
                help="give it `input = $X/1M` and `output = $Y/1M` (use $0 for a free model)",
                related=[Related(Span.point(where.file, where.line, where.column),
                                 "the budget that would count its spend")]))


def _unmatched(ctx: Context) -> None:
    if ctx.graph is None or ctx.route is None or ctx.has_errors:
        return
    if None in rules_reached(ctx.graph, TRUE):
        ctx.report(warning("GW302", "some requests match no rule and will be answered 404",
                           Span(ctx.route.span.file, ctx.route.span.line, ctx.route.span.column,
                                ctx.route.span.line, ctx.route.span.column + 5),
                           help="end the route with `otherwise -> MODEL`"))


def _attributes(ctx: Context) -> Iterator[ast.Attribute]:
    def walk(body: ast.Body) -> Iterator[ast.Attribute]:
        for member in body.members:
            if isinstance(member, ast.Attribute):
                yield member
            else:
                yield from walk(member.body)
    for decl in ctx.decls:
        body = getattr(decl, "body", None)
        if body is not None:
            yield from walk(body)


def _env(ctx: Context, value: ast.Value) -> None:
    if isinstance(value, ast.MapValue):
        for pair in value.pairs:
            _env(ctx, pair.value)
        return
    if not (isinstance(value, ast.Call) and value.name.name == "env" and len(value.args) == 1
            and isinstance(value.args[0], ast.Str)):
        return
    name = value.args[0].value
    if name not in ctx.env:
        ctx.report(warning("GW307", f"environment variable '{name}' is not set", value.span,
                           help=f'set it where the gateway runs, or give a default: '
                                f'env("{name}", "...")'))


def _plain_http(ctx: Context, attribute: ast.Attribute) -> None:
    value = attribute.value
    if attribute.name.name not in ("base_url", "webhook") or not isinstance(value, ast.Str):
        return
    if not value.value.startswith("http://"):
        return
    host = urlsplit(value.value).hostname or ""
    if host in LOOPBACK or host.startswith("127."):
        return
    ctx.report(warning("GW308", f"'{value.value}' is plain http to '{host}': keys and prompts "
                                "would cross the network unencrypted", value.span,
                       help="use https://"))
