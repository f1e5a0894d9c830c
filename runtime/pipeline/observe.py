"""Observe: the request's metrics and its access-log line, never a prompt or a key.

What guards did is logged by guard, direction, action and kind (a detector's
name), never the text they found.

Rules are named by their `file:line`, relative to the policy's folder, so a
label is the same wherever the policy is deployed.
"""

from __future__ import annotations

from typing import Any

from runtime.pipeline.exchange import Exchange

REFUSALS = ("rate_limit_exceeded", "budget_exceeded", "subject_limit_reached",
            "state_unavailable")


def leave(exchange: Exchange) -> None:
    gateway = exchange.gateway
    metrics = gateway.metrics
    seconds = gateway.clock() - exchange.started
    status = str(exchange.status)
    rule = exchange.decision.where if exchange.decision is not None else ""
    deployment = exchange.answered_by
    usage = exchange.usage or None
    line: dict[str, Any] = {
        "request_id": exchange.request_id, "path": exchange.endpoint.path,
        "status": exchange.status,
        "ms": int(seconds * 100_000) / 100,  # round() is several times slower
        "model": None, "provider": None, "rule": rule or None, "attempts": None,
        "tokens": usage, "cost": exchange.cost if usage else None,
        "cache": exchange.cache, "policy": exchange.loaded.version,
        "error": exchange.error.message if exchange.error is not None else None}
    if exchange.attempts:
        line["attempts"] = [{"model": a.model, "outcome": a.outcome} for a in exchange.attempts]
    if exchange.key_id is not None:
        line["key"] = exchange.key_id  # the id, never the secret
    error = exchange.error
    if error is not None and error.code in REFUSALS:
        metrics.refusals.add((error.code, "enforce"))
    if exchange.applied:
        shadowed = [a.limit.counter for a in exchange.applied
                    if not a.limit.enforce and not a.verdict.allowed]
        for counter in shadowed:
            metrics.refusals.add(("budget_exceeded" if counter.startswith("b:")
                                  else "rate_limit_exceeded", "shadow"))
        if shadowed:
            line["would_refuse"] = shadowed
    guarding = exchange.guarding
    if guarding is not None and guarding.acted:
        acts: dict[tuple[str, str, str, str, bool], int] = {}
        for act in guarding.acted:
            found = (act.guard, act.direction, act.action, act.kind, act.shadow)
            acts[found] = acts.get(found, 0) + 1
        line["guards"] = [{"guard": g, "direction": d, "action": a, "kind": k,
                           "mode": "shadow" if shadow else "enforce", "count": n}
                          for (g, d, a, k, shadow), n in acts.items()]
        for (g, d, a, k, shadow), n in acts.items():
            metrics.guards.add((g, d, a, k, "shadow" if shadow else "enforce"), n)
    if exchange.decision is not None and exchange.decision.cache is not None:
        metrics.cache.add((exchange.cache,))
    hit = exchange.hit
    if hit is not None:  # no upstream was called: the model is the one that answered then
        metrics.requests.add((rule, hit.model, hit.provider, status, "hit"))
        metrics.saved.add((hit.model,), hit.cost)
        line.update(model=hit.model, provider=hit.provider, saved=hit.cost)
        if exchange.similarity is not None:
            line["similarity"] = round(exchange.similarity, 4)
    elif deployment is None:
        metrics.requests.add((rule, "", "", status, exchange.cache))
    else:
        model, provider = deployment.name, deployment.provider.name
        metrics.requests.add((rule, model, provider, status, exchange.cache))
        line.update(model=model, provider=provider)
        if usage:
            metrics.tokens.add((model, "prompt"), usage.get("prompt_tokens") or 0)
            metrics.tokens.add((model, "completion"), usage.get("completion_tokens") or 0)
    metrics.latency.observe((rule,), seconds)
    gateway.log.write(line)
    gateway.logged(exchange, deployment.name if deployment is not None else None)
