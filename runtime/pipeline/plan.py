"""Plan: the body checked, the request as the policy sees it, and the graph's decision.

A request no rule takes is a 404 `no_route`; a `deny`, a 403 with its
message; a chain left empty once `requested` is resolved, a 404
`model_not_found`.
"""

from __future__ import annotations

from compiler.compiled import Request
from runtime.errors import GatewayError
from runtime.pipeline.exchange import Exchange
from runtime.schemas import parse


def enter(exchange: Exchange) -> None:
    endpoint, body, headers = exchange.endpoint, exchange.body, exchange.headers
    exchange.parsed = parsed = parse(endpoint.schema, body)
    meta = {k.removeprefix("x-gw-meta-"): v for k, v in headers.items()
            if k.startswith("x-gw-meta-")}
    meta.update(parsed.metadata or {})
    exchange.request = request = Request(
        model=parsed.model, user=exchange.user, team=exchange.team, key=exchange.key,
        endpoint=endpoint.name, tokens=endpoint.tokens(body), headers=headers, meta=meta,
        **endpoint.parameters(parsed))
    exchange.decision = decision = exchange.loaded.policy.decide(request)
    if decision.rule is None:
        raise GatewayError(404, f"no route for model '{request.model}'", "no_route",
                           param="model")
    if decision.deny is not None:
        raise GatewayError(403, decision.deny, "denied")
    if not decision.targets:
        raise GatewayError(404, f"the model '{request.model}' does not exist here",
                           "model_not_found", param="model")
