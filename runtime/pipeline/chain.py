"""Chain: the plan's targets tried in turn (runtime/chain.py), for the answer.

A plain answer arrives whole; a stream arrives once its first chunk has, and
the HTTP layer sends it on. The exit half lets the upstream connection go
(at once, if the client left or the stream broke).
"""

from __future__ import annotations

import functools

from compiler.compiled import Deployment, Target
from runtime.chain import Chain
from runtime.pipeline.exchange import Exchange


async def enter(exchange: Exchange) -> None:
    assert exchange.decision is not None and exchange.request is not None
    gateway, endpoint = exchange.gateway, exchange.endpoint
    chain = Chain(_targets(exchange), exchange.request.tokens, exchange.loaded.adapters,
                  gateway.store, gateway.observe_attempt, gateway.sleep)
    exchange.attempts = chain.attempts
    conversation = exchange.conversation
    payload = endpoint.payload(exchange.body)
    sent = endpoint.sent(exchange.headers, conversation.history if conversation else ())
    if endpoint.stream is not None and exchange.parsed.stream:
        exchange.answered_by, exchange.chunks = await chain.open_stream(
            payload, functools.partial(endpoint.stream, sent=sent))
        return
    call = functools.partial(endpoint.call, body=payload, sent=sent)
    exchange.answered_by, exchange.answer, _ = await chain.run(call)


async def leave(exchange: Exchange) -> None:
    chunks = exchange.chunks
    if chunks is not None:
        await chunks.aclose()  # type: ignore[attr-defined]


def _targets(exchange: Exchange) -> tuple[Target, ...]:
    """The plan's targets; a follow-up's first the deployment that made the response it
    continues, where the plan still routes there (it knows what it said)."""
    assert exchange.decision is not None
    targets = exchange.decision.targets
    conversation = exchange.conversation
    if conversation is None or conversation.continues is None:
        return targets
    first = [t for t in targets
             if isinstance(t, Deployment) and t.name == conversation.continues]
    return (*first, *(t for t in targets if t not in first)) if first else targets
