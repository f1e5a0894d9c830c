"""Cache: an answer kept for an equal request (exact) or a like one (semantic).

The entry half looks the request up where the plan's `cache` block says,
and answers a hit itself: the stored answer with a fresh id, or replayed as a
stream's chunks when the request streams, both in the endpoint's own wire
format. A hit calls no upstream, so it
costs nothing against budgets (its reservation is released) but counts
against request quotas, which admitted it first. The exit half keeps a fresh
answer: a whole one, or a stream that completed, never a failed answer, a
cut stream or a refusal.

A client decides for itself with `cache-control`: `no-cache` skips the
lookup and keeps the fresh answer; `no-store` neither reads nor writes.
"""

from __future__ import annotations

import orjson

from runtime.pipeline.exchange import Body, Exchange


async def enter(exchange: Exchange) -> None:
    decision = exchange.decision
    assert decision is not None
    block = decision.cache
    if block is None or not exchange.endpoint.cached:
        return
    control = exchange.headers.get("cache-control", "").lower()
    if "no-store" in control:
        return
    read = "no-cache" not in control
    lookup, entry, similarity = await exchange.gateway.cacher.find(block, exchange, read)
    if lookup is None:
        return
    exchange.lookup, exchange.cache = lookup, "miss"
    if entry is None:
        if exchange.parsed.stream:
            exchange.streamed = []
        return
    exchange.cache, exchange.hit, exchange.similarity = "hit", entry, similarity
    exchange.cost = 0.0  # no upstream was called; what it saved is logged
    form = exchange.endpoint.format
    answer = form.fresh(orjson.loads(entry.answer))
    if exchange.parsed.stream:
        exchange.chunks = form.replay(answer, exchange.include_usage)
    else:
        exchange.answer = answer


def chunk(exchange: Exchange, chunk: Body) -> Body | None:
    if exchange.streamed is not None:
        exchange.streamed.append(chunk)
    return chunk


def leave(exchange: Exchange) -> None:
    lookup = exchange.lookup
    if lookup is None or exchange.hit is not None or exchange.answered_by is None \
            or exchange.error is not None or exchange.status != 200:
        return
    answer = exchange.answer
    if exchange.streamed is not None:
        answer = exchange.endpoint.format.assembled(exchange.streamed, exchange.usage)
    if answer is not None:
        exchange.gateway.cacher.keep(lookup, exchange, answer)
