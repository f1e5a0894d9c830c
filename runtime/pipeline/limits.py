"""Limits: the plan's quotas and budgets, reserved before the call and settled after.

The admission (runtime/limiting.py) takes from every counter the request
meets, or from none, so that concurrent requests cannot overspend; it may
refuse (429, 402, 503), or send an over-budget request to the budget's
`downgrade` model. On the way out the reservation settles, to the answer's
real cost and tokens, or is released when there was no answer. A settle in
memory takes a few µs and is done at once; one with Redis, and the ledger's
row, are sent off the request's path: the client has its answer first.
"""

from __future__ import annotations

from runtime.limiting import downgraded, rate_headers, refusal
from runtime.pipeline.exchange import Exchange


async def enter(exchange: Exchange) -> None:
    decision, request = exchange.decision, exchange.request
    assert decision is not None and request is not None
    if not decision.quotas and not decision.budgets:
        return
    limiter = exchange.gateway.limiter
    counters = limiter.build(decision, {"team": exchange.team, "user": exchange.user,
                                        "key": exchange.key_id}, request.get)
    if counters is None:
        return
    admission, exchange.held = await limiter.admit(counters, request.tokens,
                                                   request.max_tokens)
    # the hold is settled on the way out, whatever happens from here
    verdicts = admission.verdicts
    exchange.limit_headers = rate_headers(counters, verdicts)
    if counters.alerting or counters.shadows or not admission.admitted:
        exchange.applied = applied = counters.applied(verdicts)
        if counters.alerting:
            exchange.gateway.alerts.check(applied)
        if not admission.admitted:
            assert admission.refused_by is not None
            raise refusal(applied[admission.refused_by])
    if counters.downgrades:
        exchange.decision = downgraded(decision, counters, verdicts,
                                       exchange.loaded.policy.target)


def leave(exchange: Exchange) -> None:
    gateway = exchange.gateway
    # an answer, or a stream cut after it began, for what it delivered (usage says)
    charged = exchange.answered_by is not None and (exchange.error is None or bool(exchange.usage))
    held = exchange.held
    if held is not None:
        tokens = float(exchange.usage.get("total_tokens") or 0)
        gateway.limiter.settle(held, (exchange.cost or 0.0) if charged else None,
                               tokens if charged else None)
        exchange.held = None
    if charged:
        gateway.spent(exchange, held.budgets if held is not None else ())
