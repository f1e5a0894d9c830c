"""Usage: the answer's tokens and what they cost, plain or streamed.

Tokens are read through the endpoint's wire format (runtime/formats), which
knows where its API puts them, and priced in chat's terms. A stream's counts
are taken as its chunks pass (later ones update earlier ones) and priced when
it is over. One cut before its usage arrived is charged for the text it
delivered, estimated (and marked so in the log).
"""

from __future__ import annotations

import math

from runtime import pricing
from runtime.pipeline.exchange import Body, Exchange


def chunk(exchange: Exchange, chunk: Body) -> Body | None:
    form = exchange.endpoint.format
    usage = form.chunk_usage(chunk)
    if usage is not None:
        exchange.usage.update(usage)
    exchange.delivered += form.chunk_text(chunk)
    return form.shown(exchange, chunk) if usage is not None else chunk


def leave(exchange: Exchange) -> None:
    form = exchange.endpoint.format
    if exchange.answer is not None:
        exchange.usage = form.usage(form.answer_usage(exchange.answer))
    elif exchange.usage:
        exchange.usage = form.usage(exchange.usage)
    if exchange.error is not None and exchange.delivered:
        # a stream cut before its usage was whole (none came, or only its start's): at
        # least what was delivered, at four characters a token, and the whole prompt,
        # which the upstream read
        usage = exchange.usage
        prompt = max(usage.get("prompt_tokens") or 0,
                     int(exchange.request.tokens) if exchange.request is not None else 0)
        completion = math.ceil(exchange.delivered / 4)
        if completion > (usage.get("completion_tokens") or 0):
            exchange.usage = {**usage, "prompt_tokens": prompt,
                              "completion_tokens": completion,
                              "total_tokens": prompt + completion, "estimated": True}
    deployment, usage = exchange.answered_by, exchange.usage
    if deployment is None or not usage:
        return
    exchange.cost = pricing.cost(usage, deployment.model)
