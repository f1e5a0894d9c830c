"""Lint: mistakes that type-check but would hurt in production.

Chains that repeat a target or bury a `deny`, empty pools, budgets over
models with no price (the budget could never count their spend), requests no
rule matches, `env()` variables unset here, plain `http://` to a host other
than this one (an error for a guard's webhook, which is sent the prompt), a
`resume` no chain can honour, a `prefill` its provider cannot take, a
`max_values` on a subject that has no values to cap, a guard's webhook whose
failure is left to the default, and webhook settings on a guard with none.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from compiler.conditions import TRUE, all_of
from compiler.context import Context
from compiler.graph.build import subject_cond
from compiler.graph.reach import rules_reached
from compiler.policy import Policy, Target
from compiler.schema import MAX_VALUES
from dsl import ast
from dsl.diagnostics import Related, error, warning
from dsl.span import Span

LOOPBACK = ("localhost", "::1")
# Provider types whose API continues a final assistant message: Anthropic's own
# prefill, vLLM-style servers' `continue_final_message`, and the mock.
PREFILL_TYPES = ("anthropic", "openai_compatible", "mock")
# A guard's settings that only act on its webhook, and what each does.
WEBHOOK_SETTINGS = {"timeout": "bounds the webhook's call",
                    "on_error": "decides what a failed or slow webhook call does"}


def run(ctx: Context) -> None:
    _chains(ctx)
    _pools(ctx)
    _unpriced(ctx)
    _unmatched(ctx)
    _resume(ctx)
    _prefill(ctx)
    _max_values(ctx)
    _webhook_settings(ctx)
    for decl, attribute in _attributes(ctx):
        _env(ctx, attribute.value)
        _plain_http(ctx, attribute, isinstance(decl, ast.GuardDecl))


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


def _resume(ctx: Context) -> None:
    """`resume = true` needs, after a model that may be cut, one that takes a prefill.

    Reported where it is written: at a provider's own `retry` block when none of
    that provider's models could resume, at the top-level one when none of the
    providers that inherit it could.
    """
    policy = ctx.policy
    honoured: set[str] = set()  # providers with a model some chain could resume after
    for rule in policy.rules:
        chain = list(dict.fromkeys(models_of(policy, rule.targets)))
        for i, name in enumerate(chain):
            if any(policy.models[later].prefill for later in chain[i + 1:]):
                honoured.add(policy.models[name].provider)
    inheriting: list[str] = []
    for name, provider in policy.providers.items():
        retry = ctx.named["provider"][name].body.blocks().get("retry")
        own = retry.body.attributes().get("resume") if retry is not None else None
        if own is None:
            inheriting += [name] if provider.retry.resume else []
        elif provider.retry.resume and name not in honoured:
            _unresumable(ctx, own.span, f"one of '{name}'")
    top = ctx.unnamed.get("retry")
    written = top.body.attributes().get("resume") if top is not None else None
    if written is not None and inheriting and not honoured & set(inheriting):
        _unresumable(ctx, written.span, "any model")


def _unresumable(ctx: Context, where: Span, after: str) -> None:
    ctx.report(warning(
        "GW309", f"no chain has a model after {after} that takes a prefill, so a cut "
                 "stream can never resume", where,
        help="give a later model in the chain `prefill = true` (its provider must continue "
             "an assistant message), or drop `resume`"))


def _prefill(ctx: Context) -> None:
    for name, model in ctx.policy.models.items():
        provider = ctx.policy.providers[model.provider]
        if not model.prefill or provider.type in PREFILL_TYPES:
            continue
        attribute = ctx.named["model"][name].body.attributes()["prefill"]
        ctx.report(warning(
            "GW310", f"model '{name}' is on provider '{provider.name}' (type "
                     f"{provider.type}), whose API does not continue an assistant message",
            attribute.span,
            help=f"prefill works on {', '.join(PREFILL_TYPES)} providers; on this one a "
                 "resumed stream would start its answer afresh"))


def _max_values(ctx: Context) -> None:
    for decl in ctx.decls:
        if not isinstance(decl, ast.LimitDecl):
            continue
        written = decl.body.attributes().get("max_values")
        if written is not None and (decl.subject.kind != "per" or decl.subject.value is None):
            ctx.report(warning(
                "GW311", f"'max_values' does nothing on a {decl.kind} {_subject_words(decl)}",
                written.span,
                help="it caps the distinct values a `per meta[...]` or `per header[...]` "
                     f"subject counts per period (default {MAX_VALUES}); remove it here"))


def _subject_words(decl: ast.LimitDecl) -> str:
    subject = decl.subject
    return "that is global" if subject.kind == "global" else f"per {subject.dimension}" \
        if subject.kind == "per" else f"of one {subject.dimension}"


def _webhook_settings(ctx: Context) -> None:
    """A guard's webhook should say what its failure does; without one, `timeout`
    and `on_error` have nothing to act on."""
    for decl in ctx.decls:
        if not isinstance(decl, ast.GuardDecl):
            continue
        attributes = decl.body.attributes()
        webhook = attributes.get("webhook")
        if webhook is not None and id(webhook) in ctx.values and "on_error" not in attributes:
            ctx.report(warning(
                "GW313", f"guard '{decl.name.name}' has a webhook but no 'on_error': by "
                         "default (deny) a request is refused when the webhook fails or is "
                         "slow", webhook.span,
                help="write `on_error = deny` to keep failing closed, or `on_error = allow` "
                     "to let requests through when the check cannot answer"))
        if webhook is not None:
            continue
        for name, does in WEBHOOK_SETTINGS.items():
            written = attributes.get(name)
            if written is not None:
                ctx.report(warning(
                    "GW314", f"'{name}' does nothing on a guard without a webhook",
                    written.span, help=f"it {does}; add `webhook = ...` or remove it"))


def _attributes(ctx: Context) -> Iterator[tuple[ast.Decl, ast.Attribute]]:
    def walk(body: ast.Body) -> Iterator[ast.Attribute]:
        for member in body.members:
            if isinstance(member, ast.Attribute):
                yield member
            else:
                yield from walk(member.body)
    for decl in ctx.decls:
        body = getattr(decl, "body", None)
        if body is not None:
            yield from ((decl, attribute) for attribute in walk(body))


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


def _plain_http(ctx: Context, attribute: ast.Attribute, guard: bool) -> None:
    """GW308 warns of plain http; a guard's webhook is sent every text the guard
    checks, so there it is GW312, an error, and GW308 is not said as well."""
    value = attribute.value
    if attribute.name.name not in ("base_url", "webhook") or not isinstance(value, ast.Str):
        return
    if not value.value.startswith("http://") or id(attribute) not in ctx.values:
        return
    try:
        host = urlsplit(value.value).hostname or ""
    except ValueError:  # `http://[x`: a bracketed host that is no IPv6 address
        host = value.value.removeprefix("http://").split("/")[0]
    if host in LOOPBACK or host.startswith("127."):
        return
    if guard:
        ctx.report(error("GW312", f"'{value.value}' is plain http to '{host}': the text this "
                                  "guard checks would cross the network unencrypted",
                         value.span, help="use https://, or run the check on this machine"))
        return
    ctx.report(warning("GW308", f"'{value.value}' is plain http to '{host}': keys and prompts "
                                "would cross the network unencrypted", value.span,
                       help="use https://"))
