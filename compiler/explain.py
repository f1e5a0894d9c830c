"""A plan in words and in JSON: what `gwc explain` prints and `gwc test` compares."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from compiler import units
from compiler.counters import block_id
from compiler.graph import Graph
from compiler.plan import Plan, route
from compiler.policy import Budget, Cache, EnvValue, Guard, Policy, Quota, Rate, Source
from compiler.request import Request


def _where(source: Source) -> dict[str, Any]:
    return {"file": source.file, "line": source.line}


def _rate(rate: Rate | None, money: bool = False) -> str | None:
    if rate is None:
        return None
    amount = f"${rate.amount:g}" if money else units.format_count(rate.amount)
    return f"{amount} per {rate.period}"


def _quota(q: Quota, request: Request) -> dict[str, Any]:
    return {"subject": str(q.subject), "counter": _counter(q.subject.dimension, request),
            "counter_id": block_id(q), "requests": _rate(q.requests), "tokens": _rate(q.tokens),
            "burst": q.burst, "concurrency": q.concurrency, "mode": q.mode,
            "source": _where(q.source)}


def _budget(b: Budget, request: Request) -> dict[str, Any]:
    over = f"downgrade({b.downgrade})" if b.over == "downgrade" else b.over
    return {"subject": str(b.subject), "counter": _counter(b.subject.dimension, request),
            "counter_id": block_id(b), "limit": _rate(b.limit, money=True),
            "alerts": list(b.alerts), "notify": b.notify, "over": over, "source": _where(b.source)}


def _cache(c: Cache) -> dict[str, Any]:
    embedder = f"model({c.embedder_model})" if c.embedder == "model" else c.embedder
    return {"mode": c.mode, "threshold": c.threshold, "ttl": units.format_seconds(c.ttl),
            "scope": c.scope or "team", "embedder": embedder if c.mode == "semantic" else None,
            "source": _where(c.source)}


def _guard(g: Guard) -> dict[str, Any]:
    hooked = g.webhook is not None
    return {"name": g.name, "on": g.on, "detect": list(g.detect), "deny": list(g.deny),
            "action": g.action, "webhook": shown_webhook(g.webhook),
            "timeout": units.format_seconds(g.timeout) if hooked else None,
            "on_error": g.on_error if hooked else None, "mode": g.mode,
            "source": _where(g.source)}


def shown_webhook(webhook: str | EnvValue | None) -> str | None:
    """A webhook as `explain` shows it, with nothing that may be secret: an env()
    value by its variable's name, a URL by its scheme and host (a path, a query
    or a user in it often carries a token), `/...` standing for what was cut."""
    if webhook is None:
        return None
    if isinstance(webhook, EnvValue):
        return f'env("{webhook.env}")'
    try:
        parts = urlsplit(webhook)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:
        return "..."  # no URL: `gwc check` refuses one, but a graph file is not checked so
    cut = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" + ("/..." if cut else "")


def _guard_text(guard: dict[str, Any]) -> str:
    checks = []
    if guard["detect"]:
        checks.append(f"detect {', '.join(guard['detect'])} -> {guard['action']}")
    if guard["deny"]:
        checks.append("deny " + ", ".join(f'"{p}"' for p in guard["deny"]))
    if guard["webhook"]:
        checks.append(f"webhook {guard['webhook']} (timeout {guard['timeout']}, "
                      f"on_error {guard['on_error']})")
    return (f"{guard['name']} on {guard['on']}: {'; '.join(checks)} ({guard['mode']}) at "
            f"{guard['source']['file']}:{guard['source']['line']}")


def _cache_text(cache: dict[str, Any]) -> str:
    if cache["mode"] == "exact":
        return f"exact, ttl {cache['ttl']}, scope {cache['scope']}"
    threshold = "the embedder's default" if cache["threshold"] is None else \
        f"{cache['threshold']:g}"
    return (f"semantic by {cache['embedder']}, threshold {threshold}, ttl {cache['ttl']}, "
            f"scope {cache['scope']}")


def _counter(dimension: str, request: Request) -> str | None:
    """Whose counter the request is counted on: the subject's value."""
    if not dimension:
        return "global"
    value = request.get(dimension)
    return None if value is None else str(value)


def explain(graph: Graph, request: Request) -> dict[str, Any]:
    plan, path = graph.trace(request)
    return describe(graph.policy, plan, request, path)


def describe(policy: Policy, plan: Plan, request: Request,
             path: list[tuple[int, str]] | None = None) -> dict[str, Any]:
    rule = policy.rules[plan.rule] if plan.rule is not None else None
    chain = route(rule, request.model, policy.declared)
    status = 403 if rule and rule.deny is not None else 200 if chain else 404
    return {
        "status": status,
        "route": chain,
        "deny": rule.deny if rule else None,
        "rule": _where(rule.source) if rule else None,
        "quotas": [_quota(policy.quotas[i], request) for i in plan.quotas],
        "budgets": [_budget(policy.budgets[i], request) for i in plan.budgets],
        "guards": [_guard(policy.guards[i]) for i in plan.guards],
        "cache": _cache(policy.caches[plan.cache]) if plan.cache is not None else None,
        "path": [{"node": node, "test": why} for node, why in (path or [])],
    }


def as_text(result: dict[str, Any]) -> str:
    lines = []
    rule = result["rule"]
    lines.append("rule:    " + (f"{rule['file']}:{rule['line']}" if rule else
                                "none matched (404 no route)"))
    if result["deny"] is not None:
        lines.append(f"deny:    403 \"{result['deny']}\"")
    else:
        lines.append("route:   " + (" -> ".join(result["route"]) or "(empty: 404)"))
    for q in result["quotas"]:
        limits = ", ".join(x for x in (q["requests"] and f"{q['requests']} requests",
                                       q["tokens"] and f"{q['tokens']} tokens",
                                       q["concurrency"] and f"{q['concurrency']} at once") if x)
        lines.append(f"quota:   {q['subject']} [{q['counter']}]: {limits} ({q['mode']}) "
                     f"at {q['source']['file']}:{q['source']['line']}, counter {q['counter_id']}")
    for b in result["budgets"]:
        lines.append(f"budget:  {b['subject']} [{b['counter']}]: {b['limit']}, over -> "
                     f"{b['over']} at {b['source']['file']}:{b['source']['line']}, "
                     f"counter {b['counter_id']}")
    for g in result["guards"]:
        lines.append(f"guard:   {_guard_text(g)}")
    cache = result["cache"]
    lines.append("cache:   " + (_cache_text(cache) if cache else "none"))
    lines.append("path:    " + (" -> ".join(p["test"] for p in result["path"]) or "(root)"))
    return "\n".join(lines) + "\n"
