"""LowerPolicy: the checked syntax tree to the typed `Policy`.

Only what checked is lowered: a block with a bad attribute keeps its other
attributes and defaults for the bad one, so the lints after this still see
as much of the policy as can be trusted.
"""

from __future__ import annotations

from typing import Any

from compiler import policy as p
from compiler.conditions import TRUE
from compiler.context import Context
from compiler.schema import HEALTH, MAX_VALUES, TIMEOUTS
from dsl import ast
from dsl.span import Span


def source(span: Span) -> p.Source:
    return p.Source(span.file, span.line, span.column, span.end_line, span.end_column)


def run(ctx: Context) -> None:
    policy = ctx.policy
    top_retry = ctx.unnamed.get("retry")
    top_breaker = ctx.unnamed.get("breaker")
    policy.retry = _retry(ctx, top_retry.body if top_retry else None, p.Retry())
    policy.breaker = _breaker(ctx, top_breaker.body if top_breaker else None, p.Breaker())
    if "auth" in ctx.unnamed:
        body = ctx.unnamed["auth"].body
        policy.auth = p.Auth(**_fields(ctx, body, {"mode": "mode", "user_header": "user_header",
                                                    "team_header": "team_header"}))
    _providers(ctx)
    _models(ctx)
    _pools(ctx)
    _notifies(ctx)
    if ctx.route is not None:
        _rules(ctx)
    for decl in ctx.decls:
        if isinstance(decl, ast.CacheDecl):
            _cache(ctx, decl)
        elif isinstance(decl, ast.LimitDecl):
            _limit(ctx, decl)
        elif isinstance(decl, ast.GuardDecl) and ctx.guards.get(decl.name.name) is decl:
            _guard(ctx, decl)
        elif isinstance(decl, ast.TestDecl):
            _test(ctx, decl)


def _providers(ctx: Context) -> None:
    policy = ctx.policy
    for name, decl in ctx.named.get("provider", {}).items():
        if ctx.value(decl.body, "type") is None:
            continue
        nested = decl.body.blocks()
        fields = _fields(ctx, decl.body, {k: k for k in (
            "type", "base_url", "api_key", *TIMEOUTS, "headers", "max_concurrency",
            "api_version", "latency", "fail_rate", "fail_status")})
        retry = nested.get("retry")
        breaker = nested.get("breaker")
        health = nested.get("health")
        if health is not None:
            fields["health"] = p.Health(**_fields(ctx, health.body, {k: k for k in HEALTH}))
        policy.providers[name] = p.Provider(
            name=name, **fields,
            retry=_retry(ctx, retry.body if retry else None, policy.retry),
            breaker=_breaker(ctx, breaker.body if breaker else None, policy.breaker))


def _models(ctx: Context) -> None:
    for name, decl in ctx.named.get("model", {}).items():
        provider = ctx.value(decl.body, "provider")
        if provider not in ctx.policy.providers:
            continue
        ctx.policy.models[name] = p.Model(
            name=name, provider=provider, upstream=ctx.value(decl.body, "name", name),
            **_fields(ctx, decl.body, {"input": "input_price", "output": "output_price",
                                       "cached_input": "cached_input_price",
                                       "cache_write": "cache_write_price",
                                       "context": "context", "max_output": "max_output",
                                       "prefill": "prefill", **{k: k for k in TIMEOUTS}}))


def _pools(ctx: Context) -> None:
    for name, decl in ctx.named.get("pool", {}).items():
        members = tuple(m for m, _ in ctx.value(decl.body, "members", ())
                        if m.model in ctx.policy.models)
        strategy = ctx.value(decl.body, "strategy", "weighted")
        ctx.policy.pools[name] = p.Pool(name, strategy, members)


def _notifies(ctx: Context) -> None:
    for name, decl in ctx.named.get("notify", {}).items():
        webhook = ctx.value(decl.body, "webhook")
        if webhook is not None:
            ctx.policy.notifies[name] = p.Notify(name, webhook,
                                                 ctx.value(decl.body, "format", "json"))


def _fields(ctx: Context, body: ast.Body, names: dict[str, str]) -> dict[str, Any]:
    """Checked attribute values under the dataclass's field names; absent ones left out."""
    out = {}
    for attr, field in names.items():
        attribute = body.attributes().get(attr)
        if attribute is not None and id(attribute) in ctx.values:
            out[field] = ctx.values[id(attribute)]
    return out


def _retry(ctx: Context, body: ast.Body | None, base: p.Retry) -> p.Retry:
    if body is None:
        return base
    fields = _fields(ctx, body, {"attempts": "attempts", "on": "on", "resume": "resume"})
    backoff = ctx.value(body, "backoff")
    if backoff is not None:
        fields["backoff_min"], fields["backoff_max"] = backoff
    return p.Retry(**{**_as_dict(base), **fields})


def _breaker(ctx: Context, body: ast.Body | None, base: p.Breaker) -> p.Breaker:
    if body is None:
        return base
    fields = _fields(ctx, body, {k: k for k in ("failures", "window", "cooldown", "probes",
                                                 "error_rate", "min_requests")})
    return p.Breaker(**{**_as_dict(base), **fields})


def _as_dict(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


def _cond(ctx: Context, cond: ast.Cond | None) -> Any:
    """The lowered condition; a condition that failed to check lowers to None."""
    if cond is None:
        return TRUE
    return ctx.conds.get(id(cond))


def _rules(ctx: Context) -> None:
    assert ctx.route is not None
    for rule in ctx.route.rules:
        cond = _cond(ctx, rule.cond)
        if cond is None:
            continue
        deny = next((t.message.value for t in rule.targets if isinstance(t, ast.Deny)), None)
        targets = []
        for target in rule.targets:
            if isinstance(target, ast.Requested):
                targets.append(p.Target("requested"))
            elif isinstance(target, ast.ModelTarget):
                if target.name in ctx.policy.models:
                    targets.append(p.Target("model", target.name))
                elif target.name in ctx.policy.pools:
                    targets.append(p.Target("pool", target.name))
        index = len(ctx.policy.rules)
        ctx.policy.rules.append(p.Rule(index, tuple(targets), deny, source(rule.span), cond))


def _subject(subject: ast.Subject) -> p.Subject:
    if subject.kind == "per" and subject.value is not None:  # `per header["X-App"]`
        key = subject.value.value
        return p.Subject("per", f"{subject.dimension}:"
                         f"{key.lower() if subject.dimension == 'header' else key}")
    return p.Subject(subject.kind, subject.dimension, subject.value.value if subject.value else "")


def _cache(ctx: Context, decl: ast.CacheDecl) -> None:
    cond = _cond(ctx, decl.cond)
    if cond is None:
        return
    fields = _fields(ctx, decl.body, {k: k for k in ("mode", "threshold", "ttl", "scope",
                                                      "max_entries")})
    embedder = ctx.value(decl.body, "embedder", ("hash", None))
    ctx.policy.caches.append(p.Cache(len(ctx.policy.caches), source(decl.span), cond=cond,
                                     embedder=embedder[0],
                                     embedder_model=embedder[1].name if embedder[1] else None,
                                     **fields))


def _limit(ctx: Context, decl: ast.LimitDecl) -> None:
    cond = _cond(ctx, decl.cond)
    if cond is None:
        return
    subject, where = _subject(decl.subject), source(decl.span)
    stored = _fields(ctx, decl.body, {"max_values": "max_values",
                                      "on_store_error": "on_store_error"})
    if subject.keyed:
        stored.setdefault("max_values", MAX_VALUES)
    else:
        stored.pop("max_values", None)  # GW311 said it does nothing here
    if decl.kind == "quota":
        fields = _fields(ctx, decl.body, {k: k for k in ("requests", "tokens", "burst",
                                                          "concurrency", "mode")}) | stored
        ctx.policy.quotas.append(p.Quota(len(ctx.policy.quotas), subject, where, cond=cond,
                                         **fields))
        return
    fields = _fields(ctx, decl.body, {"limit": "limit", "alert": "alerts",
                                      "notify": "notify"}) | stored
    over = ctx.value(decl.body, "over", ("reject", None))
    downgrade = over[1].name if over[1] is not None else None
    ctx.policy.budgets.append(p.Budget(len(ctx.policy.budgets), subject, where, cond=cond,
                                       over=over[0], downgrade=downgrade, **fields))


def _guard(ctx: Context, decl: ast.GuardDecl) -> None:
    cond = _cond(ctx, decl.cond)
    if cond is None:
        return
    fields = _fields(ctx, decl.body, {k: k for k in ("on", "detect", "deny", "action", "webhook",
                                                      "timeout", "on_error", "mode")})
    ctx.policy.guards.append(p.Guard(len(ctx.policy.guards), decl.name.name, source(decl.span),
                                     cond=cond, **fields))


def _test(ctx: Context, decl: ast.TestDecl) -> None:
    blocks = decl.body.blocks()
    if "given" not in blocks or "expect" not in blocks:
        return
    given = {m.name.name: ctx.values[id(m)] for m in blocks["given"].body.members
             if isinstance(m, ast.Attribute) and id(m) in ctx.values}
    expect: dict[str, object] = {}
    for member in blocks["expect"].body.members:
        if isinstance(member, ast.Attribute) and id(member) in ctx.values:
            value = ctx.values[id(member)]
            expect[member.name.name] = [i.name for i in value] \
                if member.name.name in ("route", "guards") else value
    ctx.policy.tests.append(p.TestCase(decl.name.value, source(decl.span), given, expect))
