"""A plan by value, and the kinds of change between two.

Plans name blocks by index into their own policy's tables, so two policies'
plans are compared here through what those blocks say: the route chain with
each target's deployment, the deny message, each quota's and budget's
subject and settings, the cache's settings, each guard's name and settings.
A block moved, renamed in a comment or joined by an unrelated one is the
same value, and is no change.

A quota (or budget) that both plans hold with equal settings is no change;
one whose subject both hold with different settings is `stricter` when some
setting tightens, `looser` when some setting loosens (both, when it does
both); a difference in a setting that neither tightens nor loosens (a budget's
`notify`, its downgrade model) is told as the old block removed and the new
one added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compiler import units
from compiler.plan import Plan, route
from compiler.policy import Budget, Cache, Guard, Policy, Quota, Rate, Rule, Source

ROUTE_KINDS = ("route-changed", "fallback-changed", "provider-changed", "newly-denied",
               "newly-allowed")
LIMIT_KINDS = tuple(f"{block}-{how}" for block in ("quota", "budget")
                    for how in ("added", "removed", "stricter", "looser"))
KINDS = (*ROUTE_KINDS, *LIMIT_KINDS, "cache-changed", "guard-added", "guard-removed",
         "guard-changed")


@dataclass(frozen=True, slots=True)
class Change:
    """What changes for every request of a class: the kind, the deciding block in
    each policy (None where there is none), and for route kinds the routes."""

    kind: str
    old: Source | None
    new: Source | None
    summary: str
    old_route: tuple[str, ...] = ()
    new_route: tuple[str, ...] = ()
    old_deny: str | None = None
    new_deny: str | None = None


class Side:
    """One policy's plans by value, each worked out once."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.declared = policy.declared
        self._targets: dict[str, tuple[object, ...]] = {}
        self._routes: dict[int | None, tuple[object, ...]] = {}

    def target(self, name: str) -> tuple[object, ...]:
        """A route target by value: a model with its provider, a pool with its members."""
        found = self._targets.get(name)
        if found is None:
            found = self._targets[name] = self._target(name)
        return found

    def _target(self, name: str) -> tuple[object, ...]:
        policy = self.policy
        if name in policy.pools:
            pool = policy.pools[name]
            return ("pool", name, pool.strategy,
                    tuple((m.model, m.weight, self.target(m.model)) for m in pool.members))
        model = policy.models[name]
        provider = policy.providers[model.provider]
        return ("model", name, model.upstream, provider.name, provider.type,
                repr(provider.base_url))

    def route_value(self, rule: int | None) -> tuple[object, ...]:
        """The route part of a plan by value; where it names `requested`, with every
        declared name's target, since which model that resolves to depends on them."""
        found = self._routes.get(rule)
        if found is None:
            found = self._routes[rule] = self._route_value(rule)
        return found

    def _route_value(self, rule: int | None) -> tuple[object, ...]:
        if rule is None:
            return ("none",)
        chosen = self.policy.rules[rule]
        if chosen.deny is not None:
            return ("deny", chosen.deny)
        targets = tuple(("requested",) if t.kind == "requested" else self.target(t.name)
                        for t in chosen.targets)
        if any(t.kind == "requested" for t in chosen.targets):
            return ("chain", targets, tuple(self.target(n) for n in sorted(self.declared)))
        return ("chain", targets)

    def rule(self, index: int | None) -> Rule | None:
        return self.policy.rules[index] if index is not None else None

    def limits_value(self, plan: Plan) -> tuple[object, ...]:
        p = self.policy
        return (tuple(sorted(repr(quota_key(p.quotas[i])) for i in plan.quotas)),
                tuple(sorted(repr(budget_key(p.budgets[i])) for i in plan.budgets)),
                cache_key(p.caches[plan.cache]) if plan.cache is not None else None,
                tuple(sorted(repr(guard_key(p.guards[i])) for i in plan.guards)))


def quota_key(q: Quota) -> tuple[Any, ...]:
    return (str(q.subject), q.requests, q.tokens, q.burst, q.concurrency, q.mode,
            q.max_values, q.on_store_error)


def budget_key(b: Budget) -> tuple[Any, ...]:
    return (str(b.subject), b.limit, b.alerts, b.notify, b.over, b.downgrade, b.max_values,
            b.on_store_error)


def cache_key(c: Cache) -> tuple[Any, ...]:
    return (c.mode, c.threshold, c.ttl, c.scope, c.embedder, c.embedder_model, c.max_entries)


def guard_key(g: Guard) -> tuple[Any, ...]:
    return (g.name, g.on, g.detect, g.deny, g.action, repr(g.webhook), g.timeout, g.on_error,
            g.mode)


# ------------------------------------------------------------------ routes


def route_changes(old: Side, new: Side, old_rule: int | None, new_rule: int | None,
                  named: str | None) -> list[Change]:
    """What changes for requests that match these rules and name `named` (a model
    both policies may declare; None for any other name, or none)."""
    a, b = old.rule(old_rule), new.rule(new_rule)
    chain_a = tuple(route(a, named, old.declared))
    chain_b = tuple(route(b, named, new.declared))
    deny_a = a.deny if a is not None else None
    deny_b = b.deny if b is not None else None
    where_a = a.source if a is not None else None
    where_b = b.source if b is not None else None

    def change(kind: str, summary: str) -> list[Change]:
        return [Change(kind, where_a, where_b, summary, chain_a, chain_b, deny_a, deny_b)]

    refused_a, refused_b = not chain_a, not chain_b
    if refused_a and refused_b:
        if deny_a == deny_b:
            return []
        return change("route-changed", f"{_refusal(deny_a)} -> {_refusal(deny_b)}")
    if refused_b:
        return change("newly-denied", f"{_chain(chain_a)} -> {_refusal(deny_b)}")
    if refused_a:
        return change("newly-allowed", f"{_refusal(deny_a)} -> {_chain(chain_b)}")
    if chain_a[0] != chain_b[0]:
        return change("route-changed", f"{_chain(chain_a)} -> {_chain(chain_b)}")
    if chain_a != chain_b:
        return change("fallback-changed", f"{_chain(chain_a)} -> {_chain(chain_b)}")
    moved = [n for n in chain_a if old.target(n) != new.target(n)]
    if moved:
        return change("provider-changed", "; ".join(
            f"{n}: {_deployment(old.target(n))} -> {_deployment(new.target(n))}"
            for n in moved))
    return []


def _refusal(deny: str | None) -> str:
    return f'deny "{deny}"' if deny is not None else "no route (404)"


def _chain(chain: tuple[str, ...]) -> str:
    return ", ".join(chain)


def _deployment(target: tuple[object, ...]) -> str:
    if target[0] == "pool":
        members = target[3]
        return f"pool {target[2]} of " + ", ".join(
            f"{m[0]}: {m[1]:g} ({_deployment(m[2])})" for m in members)  # type: ignore[attr-defined]
    return f"{target[3]}/{target[2]}"


# ------------------------------------------------------------------ limits


def limit_changes(old: Side, new: Side, old_plan: Plan, new_plan: Plan) -> list[Change]:
    """What changes in the quotas, budgets, cache and guards between two plans."""
    a, b = old.policy, new.policy
    out = _blocks("quota", [a.quotas[i] for i in old_plan.quotas],
                  [b.quotas[i] for i in new_plan.quotas], quota_key, _quota_ways, _quota_text)
    out += _blocks("budget", [a.budgets[i] for i in old_plan.budgets],
                   [b.budgets[i] for i in new_plan.budgets], budget_key, _budget_ways,
                   _budget_text)
    cache_a = a.caches[old_plan.cache] if old_plan.cache is not None else None
    cache_b = b.caches[new_plan.cache] if new_plan.cache is not None else None
    key_a = cache_key(cache_a) if cache_a is not None else None
    key_b = cache_key(cache_b) if cache_b is not None else None
    if key_a != key_b:
        out.append(Change("cache-changed", cache_a.source if cache_a else None,
                          cache_b.source if cache_b else None,
                          f"{_cache_text(cache_a)} -> {_cache_text(cache_b)}"))
    guards_a = {g.name: g for g in (a.guards[i] for i in old_plan.guards)}
    guards_b = {g.name: g for g in (b.guards[i] for i in new_plan.guards)}
    for name in sorted(guards_a.keys() | guards_b.keys()):
        ga, gb = guards_a.get(name), guards_b.get(name)
        if gb is None and ga is not None:
            out.append(Change("guard-removed", ga.source, None, f"guard {name}"))
        elif ga is None and gb is not None:
            out.append(Change("guard-added", None, gb.source, f"guard {name}"))
        elif ga is not None and gb is not None and guard_key(ga) != guard_key(gb):
            out.append(Change("guard-changed", ga.source, gb.source,
                              f"guard {name}: {_guard_diff(ga, gb)}"))
    return out


def _blocks(block: str, olds: list[Any], news: list[Any], key: Any, ways: Any,
            text: Any) -> list[Change]:
    """Quotas or budgets: equal settings cancel, same subjects pair up, the rest
    are added or removed."""
    olds, news = list(olds), list(news)
    for item in list(olds):
        twin = next((n for n in news if key(n) == key(item)), None)
        if twin is not None:
            olds.remove(item)
            news.remove(twin)
    out: list[Change] = []
    for item in olds:
        twin = next((n for n in news if str(n.subject) == str(item.subject)), None)
        if twin is None:
            out.append(Change(f"{block}-removed", item.source, None, text(item)))
            continue
        news.remove(twin)
        stricter, looser = ways(item, twin)
        summary = f"{text(item)} -> {text(twin)}"
        if stricter:
            out.append(Change(f"{block}-stricter", item.source, twin.source, summary))
        if looser:
            out.append(Change(f"{block}-looser", item.source, twin.source, summary))
        if not stricter and not looser:
            out.append(Change(f"{block}-removed", item.source, None, text(item)))
            out.append(Change(f"{block}-added", None, twin.source, text(twin)))
    out += [Change(f"{block}-added", None, item.source, text(item)) for item in news]
    return out


_UNLIMITED = float("inf")


def _per_second(rate: Rate | None) -> float:
    return _UNLIMITED if rate is None else rate.amount / units.PERIODS[rate.period]


def _window(rate: Rate | None) -> float:
    return 0.0 if rate is None else units.PERIODS[rate.period]


def _directions(pairs: list[tuple[float, float]]) -> tuple[bool, bool]:
    """(some setting tightens, some loosens), each pair (old, new) where lower is
    stricter."""
    return (any(b < a for a, b in pairs), any(b > a for a, b in pairs))


def _rates(a: Rate | None, b: Rate | None) -> list[tuple[float, float]]:
    """A rate by its amount per second; at an equal rate, the longer window is looser."""
    pairs = [(_per_second(a), _per_second(b))]
    if pairs[0][0] == pairs[0][1]:
        pairs.append((_window(a), _window(b)))
    return pairs


def _quota_ways(a: Quota, b: Quota) -> tuple[bool, bool]:
    def burst(q: Quota) -> float:
        if q.burst is not None:
            return q.burst
        return q.requests.amount if q.requests is not None else _UNLIMITED

    def cap(value: int | None, default: float) -> float:
        return default if value is None else value

    return _directions([
        *_rates(a.requests, b.requests), *_rates(a.tokens, b.tokens), (burst(a), burst(b)),
        (cap(a.concurrency, _UNLIMITED), cap(b.concurrency, _UNLIMITED)),
        (float(a.mode == "shadow"), float(b.mode == "shadow")),
        (cap(a.max_values, 1000), cap(b.max_values, 1000)),
        (float(a.on_store_error == "local"), float(b.on_store_error == "local"))])


_OVER = {"reject": 0.0, "downgrade": 1.0, "allow": 2.0}


def _budget_ways(a: Budget, b: Budget) -> tuple[bool, bool]:
    def cap(value: int | None) -> float:
        return 1000.0 if value is None else value

    return _directions([
        *_rates(a.limit, b.limit), (_OVER[a.over], _OVER[b.over]),
        (cap(a.max_values), cap(b.max_values)),
        (float(a.on_store_error == "local"), float(b.on_store_error == "local"))])


def _rate(rate: Rate, money: bool = False) -> str:
    amount = f"${rate.amount:g}" if money else units.format_count(rate.amount)
    return f"{amount} per {rate.period}"


def _quota_text(q: Quota) -> str:
    parts = [f"requests {_rate(q.requests)}" if q.requests else "",
             f"tokens {_rate(q.tokens)}" if q.tokens else "",
             f"burst {q.burst}" if q.burst is not None else "",
             f"concurrency {q.concurrency}" if q.concurrency is not None else "",
             "shadow" if q.mode == "shadow" else "",
             f"max_values {q.max_values}" if q.max_values is not None else "",
             "on_store_error local" if q.on_store_error == "local" else ""]
    return f"quota {q.subject} {{{'; '.join(p for p in parts if p)}}}"


def _budget_text(b: Budget) -> str:
    over = f"downgrade({b.downgrade})" if b.over == "downgrade" else b.over
    parts = [f"limit {_rate(b.limit, money=True)}" if b.limit else "", f"over {over}",
             "alert " + ", ".join(f"{x * 100:g}%" for x in b.alerts) if b.alerts else "",
             f"notify {b.notify}" if b.notify else "",
             f"max_values {b.max_values}" if b.max_values is not None else "",
             "on_store_error local" if b.on_store_error == "local" else ""]
    return f"budget {b.subject} {{{'; '.join(p for p in parts if p)}}}"


def _cache_text(c: Cache | None) -> str:
    if c is None:
        return "no cache"
    parts = [c.mode, f"ttl {units.format_seconds(c.ttl)}", f"scope {c.scope or 'team'}"]
    if c.mode == "semantic":
        parts.append(f"threshold {c.threshold:g}" if c.threshold is not None else
                     "threshold default")
        parts.append(f"embedder {c.embedder_model or c.embedder}")
    parts.append(f"max_entries {c.max_entries}")
    return "cache " + ", ".join(parts)


_GUARD_FIELDS = ("on", "detect", "deny", "action", "webhook", "timeout", "on_error", "mode")


def _guard_diff(a: Guard, b: Guard) -> str:
    said = []
    for name in _GUARD_FIELDS:
        va, vb = getattr(a, name), getattr(b, name)
        if repr(va) != repr(vb):
            said.append(f"{name} {_shown(name, va)} -> {_shown(name, vb)}")
    return "; ".join(said)


def _shown(name: str, value: Any) -> str:
    from compiler.explain import shown_webhook

    if name == "webhook":
        return shown_webhook(value) or "none"
    if name == "timeout":
        return units.format_seconds(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return str(value)
