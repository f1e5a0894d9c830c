"""Plan: the body checked, the request as the policy sees it, and the graph's decision.

A request no rule takes is a 404 `no_route`; a `deny`, a 403 with its
message; a chain left empty once `requested` is resolved, a 404
`model_not_found`; a model the caller's key may not call, a 403.

`budget.team` and its kin read the share of the caller's budget spent, as the
last admission on this replica left it: no store is asked on the way in (with
several replicas, a share is as fresh as this replica's last request of that
subject).
"""

from __future__ import annotations

from compiler.compiled import Request
from runtime.errors import GatewayError
from runtime.limiting import value_text
from runtime.pipeline.exchange import Exchange
from runtime.schemas import parse


def enter(exchange: Exchange) -> None:
    endpoint, body, headers = exchange.endpoint, exchange.body, exchange.headers
    exchange.parsed = parsed = parse(endpoint.schema, body)
    meta = {k.removeprefix("x-gw-meta-"): v for k, v in headers.items()
            if k.startswith("x-gw-meta-")}
    meta.update(endpoint.meta(parsed))
    allowed = exchange.allowed_models
    if allowed is not None and parsed.model not in allowed:
        raise GatewayError(403, f"this key may not call '{parsed.model}' (it may call: "
                           f"{', '.join(allowed)})", "model_not_allowed", param="model")
    shares = exchange.gateway.limiter.shares if exchange.loaded.reads_budget else None
    budget = {dimension: share for dimension, value in (
        ("team", exchange.team), ("user", exchange.user), ("key", exchange.key_id))
        if value is not None
        and (share := shares.get((dimension, value_text(value)))) is not None} \
        if shares else {}
    tokens = endpoint.tokens(body)
    if exchange.conversation is not None:  # a follow-up's history is read as its input is
        tokens += exchange.conversation.tokens
    exchange.request = request = Request(
        model=parsed.model, user=exchange.user, team=exchange.team, key=exchange.key,
        endpoint=endpoint.name, tokens=tokens, headers=headers, meta=meta,
        budget=budget, **endpoint.parameters(parsed))
    exchange.decision = decision = exchange.loaded.policy.decide(request)
    if decision.rule is None:
        raise GatewayError(404, f"no route for model '{request.model}'", "no_route",
                           param="model")
    if decision.deny is not None:
        raise GatewayError(403, decision.deny, "denied")
    if not decision.targets:
        raise GatewayError(404, f"the model '{request.model}' does not exist here",
                           "model_not_found", param="model")
