"""Usage: the answer's tokens and what they cost, plain or streamed.

gwc always asks an upstream for a stream's usage, for its own accounting,
but a client gets the closing usage chunk (`choices: []`) only when it asked
with `stream_options.include_usage`, as OpenAI's API does: the standard
`chunk.choices[0].delta` loop of the openai SDK fails on a chunk it did not
ask for.
"""

from __future__ import annotations

from runtime import pricing
from runtime.pipeline.exchange import Body, Exchange


def chunk(exchange: Exchange, chunk: Body) -> Body | None:
    usage = chunk.get("usage")
    if usage:
        exchange.usage.update(usage)
        if not chunk.get("choices") and not exchange.include_usage:
            return None
    return chunk


def leave(exchange: Exchange) -> None:
    if exchange.answer is not None:
        exchange.usage = exchange.answer.get("usage") or {}
    deployment, usage = exchange.answered_by, exchange.usage
    if deployment is None or not usage:
        return
    exchange.cost = pricing.cost(usage, deployment.model)
