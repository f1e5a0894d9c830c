"""Usage: the answer's tokens and what they cost, plain or streamed.

gwc always asks an upstream for a stream's usage, for its own accounting,
but a client gets the closing usage chunk (`choices: []`) only when it asked
with `stream_options.include_usage`, as OpenAI's API does: the standard
`chunk.choices[0].delta` loop of the openai SDK fails on a chunk it did not
ask for.

A stream's cost settles from its usage, and the closing usage chunk, where
asked for, carries it as `usage.cost` (USD, as OpenRouter does), since a
stream's headers leave before its cost is known. One cut before its usage
arrived is charged for the text it delivered, estimated (and marked so in the
log).
"""

from __future__ import annotations

import math

from runtime import pricing
from runtime.pipeline.exchange import Body, Exchange


def chunk(exchange: Exchange, chunk: Body) -> Body | None:
    usage = chunk.get("usage")
    if usage:
        exchange.usage.update(usage)
        if not chunk.get("choices"):
            if not exchange.include_usage:
                return None
            deployment = exchange.answered_by
            if deployment is not None and isinstance(usage, dict):  # the client's cost too
                return {**chunk, "usage": {**usage, "cost": round(
                    pricing.cost(exchange.usage, deployment.model), 10)}}
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            exchange.delivered += len(delta["content"])
    return chunk


def leave(exchange: Exchange) -> None:
    if exchange.answer is not None:
        exchange.usage = exchange.answer.get("usage") or {}
    elif exchange.error is not None and not exchange.usage and exchange.delivered:
        # a stream cut before its usage came: what was delivered, at four characters a
        # token, and the whole prompt, which the upstream read
        prompt = exchange.request.tokens if exchange.request is not None else 0
        completion = math.ceil(exchange.delivered / 4)
        exchange.usage = {"prompt_tokens": int(prompt), "completion_tokens": completion,
                          "total_tokens": int(prompt) + completion, "estimated": True}
    deployment, usage = exchange.answered_by, exchange.usage
    if deployment is None or not usage:
        return
    exchange.cost = pricing.cost(usage, deployment.model)
