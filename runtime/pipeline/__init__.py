"""A request's way through the gateway: a table of named stages.

Like the compiler's `PASSES` (and Django's MIDDLEWARE, Envoy's filter chain),
`STAGES` lists the stages in order, each one module with an entry half and
an exit half over one `Exchange`. The entry halves run in order until one of
them answers: with an error (a refusal is a `GatewayError`), or with the
answer itself (the chain's, or later a cache hit's). Then the exchange leaves
through every stage's exit half, in reverse order, whichever stage answered:
an exit half reads the exchange to see what happened (a refusal has no
answer to cost; a cache hit made no upstream call). A stream leaves when its
last chunk has gone, or it broke, or its client left, so plain and streamed
answers leave by the same path; on the way, each stream chunk passes the
stages' chunk halves.

The order is the onion's: `observe` wraps everything, so its exit half runs
last and sees what every other stage did; `usage` sits innermost, so its exit
half prices the answer first, before `limits` settles to that price (and the
cache, later, stores it). Adding a stage is one module and one line here.
Input guards go before `limits`, so a refused request spends nothing; output
guards between `chain` and `usage`. A stage whose work on a stream needs more
than one chunk at a time (output guards hold text back, and may await a
webhook) has a stream half instead: it wraps the stream's chunks once, as the
stream begins, before they meet the chunk halves.
While tracing is on (runtime/tracing.py), each half runs in a span of its own,
under the request's, which ends once the last exit half has run.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from runtime import tracing
from runtime.errors import GatewayError
from runtime.pipeline import (
    cache,
    chain,
    conversation,
    guards,
    identity,
    limits,
    observe,
    plan,
    usage,
)
from runtime.pipeline.exchange import Attempt, Body, Exchange

Half = Callable[[Exchange], Awaitable[None] | None]
ChunkHalf = Callable[[Exchange, Body], Body | None]
StreamHalf = Callable[[Exchange, AsyncIterator[Body]], AsyncIterator[Body]]


@dataclass(frozen=True)
class Stage:
    name: str
    enter: Half | None = None
    leave: Half | None = None
    chunk: ChunkHalf | None = None  # a stream chunk on its way out; None drops it
    stream: StreamHalf | None = None  # the stream's chunks, wrapped as it begins


STAGES: list[Stage] = [
    Stage("observe", None, observe.leave),                 # metrics and the access log
    Stage("identity", identity.enter),                     # who calls: auth
    Stage("conversation", conversation.enter, conversation.leave,  # a follow-up made whole;
          conversation.chunk),                                     # a response kept
    Stage("plan", plan.enter),                             # the body checked; the graph's plan
    Stage("input_guards", guards.enter),                   # refused or redacted, before spending
    Stage("limits", limits.enter, limits.leave),           # reserve before, settle after
    Stage("cache", cache.enter, cache.leave, cache.chunk),  # a stored answer; keep a fresh one
    Stage("chain", chain.enter, chain.leave),              # targets tried: the answer
    Stage("output_guards", None, guards.leave,             # the answer checked: whole,
          stream=guards.stream),                           # or as it streams
    Stage("usage", None, usage.leave, usage.chunk),        # tokens and their cost
]


class Pipeline:
    """A table of stages, run: its halves looked up (and whether each is awaited) once."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages
        self._enters = _halves([s.enter for s in stages])
        self._leaves = _halves([s.leave for s in reversed(stages)])
        self._chunks = [s.chunk for s in reversed(stages) if s.chunk is not None]
        self._streams = [s.stream for s in reversed(stages) if s.stream is not None]
        # the same halves, each in a span of its own: run instead while tracing is on
        self._traced_enters = [(tracing.staged(s.name, "enter", s.enter), True)
                               for s in stages if s.enter is not None]
        self._traced_leaves = [(tracing.staged(s.name, "leave", s.leave), True)
                               for s in reversed(stages) if s.leave is not None]

    async def enter(self, exchange: Exchange) -> None:
        """The entry halves, in order, until one answers. A refusal is kept on the
        exchange (its status too); anything else raised is a bug, and propagates."""
        halves = self._enters if tracing.active is None else self._traced_enters
        try:
            for half, awaited in halves:
                if awaited:
                    await half(exchange)
                else:
                    half(exchange)
                if exchange.answer is not None:
                    return  # a refusal is raised, so an answer is all there is to look for
                chunks = exchange.chunks
                if chunks is not None:
                    for wrap in self._streams:
                        chunks = wrap(exchange, chunks)
                    exchange.chunks = chunks
                    return
        except GatewayError as error:
            exchange.error, exchange.status = error, error.status

    async def leave(self, exchange: Exchange) -> None:
        """The exit halves, in reverse order; every one runs, whatever another raised.
        A traced request's span ends after the last, when all is known of it."""
        traced = tracing.active
        halves = self._leaves if traced is None else self._traced_leaves
        failure: Exception | None = None
        try:
            for half, awaited in halves:
                try:
                    if awaited:
                        await half(exchange)
                    else:
                        half(exchange)
                except Exception as exc:  # one bug must not cost the others' work, or the log
                    failure = failure or exc
        finally:
            if traced is not None:
                traced.end(exchange, failure)
        if failure is not None:
            raise failure

    def outgoing(self, exchange: Exchange, chunk: Body) -> Body | None:
        """A stream chunk as it leaves: through each stage's chunk half, innermost first."""
        for half in self._chunks:
            result = half(exchange, chunk)
            if result is None:
                return None
            chunk = result
        return chunk


def _halves(halves: list[Half | None]) -> list[tuple[Any, bool]]:
    return [(h, inspect.iscoroutinefunction(h)) for h in halves if h is not None]


PIPELINE = Pipeline(STAGES)

__all__ = ["PIPELINE", "STAGES", "Attempt", "Exchange", "Pipeline", "Stage"]
