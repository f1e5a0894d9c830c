"""A plan's fallback chain, run: pools picked, breakers heeded, retries, fallback, resume.

Targets expand to models (a pool to its members, best first by its strategy).
A model is passed over while its breaker is open or when its `context` is
smaller than the request's tokens. Each model is tried up to its provider's
`retry.attempts` times, with backoff, on the failures `retry.on` names, then
the chain falls back to the next model, on every failure worth it (see
`UpstreamError.worth_falling_back`). Two failures are never retried on the
same model: a context too long (the model would refuse it again) and, while a
later model is left, a timeout (a silent upstream has already used up the
client's patience once). A Retry-After is waited out as told, up to the
backoff's ceiling; told to wait longer, the chain goes to the next model at
once rather than knock early, and only the last model waits (capped). A
stream falls back only until its first chunk; after that, where the
provider's `retry { resume = true }` says so, a cut stream goes on at the
next model that takes an assistant prefill, from the text the client
already has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from compiler.compiled import Breaker as PolicyBreaker
from compiler.compiled import Deployment, PoolTarget, Timeouts
from policies import backoff
from policies.breaker import Settings
from policies.store import Store
from runtime import tracing
from runtime.by_identity import ByIdentity
from runtime.errors import GatewayError, UpstreamError
from runtime.formats.base import closed
from runtime.pipeline.exchange import Attempt, Body
from runtime.providers.base import Adapter

T = TypeVar("T")
Call = Callable[[Adapter, Deployment, Timeouts], Awaitable[T]]
Opener = Callable[[Adapter, Deployment, Body, Timeouts], AsyncIterator[Body]]


def _made_settings(b: PolicyBreaker) -> Settings:
    return Settings(b.failures, b.window, b.cooldown, b.probes, b.error_rate, b.min_requests)


# The mechanism's settings for a policy's breaker block, made once per block (every try
# asks). `policies/` imports nothing of ours, so it keeps its own settings type.
_settings = ByIdentity(_made_settings, 256)


class Chain:
    """One request's way through its targets."""

    def __init__(self, targets: tuple[Deployment | PoolTarget, ...], tokens: float,
                 adapters: dict[str, Adapter], store: Store,
                 record: Callable[[Attempt], None],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.adapters = adapters
        self.store = store
        self.record = record
        self.sleep = sleep
        self.clock = clock
        self.attempts: list[Attempt] = []
        self.trace = tracing.scope()  # the chain stage's span, where the request is traced
        self.models = self._expand(targets, tokens)

    def _expand(self, targets: tuple[Deployment | PoolTarget, ...],
                tokens: float) -> list[Deployment]:
        out: list[Deployment] = []
        chosen: set[str] = set()
        for target in targets:
            if isinstance(target, PoolTarget):
                members = [target.by_name[name] for name in self.store.order(
                    target.name, target.strategy, target.weights, target.price)]
            else:
                members = [target]
            for deployment in members:
                name = deployment.name
                if name in chosen:
                    continue
                context = deployment.model.context
                if context is not None and tokens > context:
                    self.note(Attempt(name, deployment.provider.name,
                                      f"skipped: {tokens:g} tokens over its context"))
                    continue
                chosen.add(name)
                out.append(deployment)
        return out

    def note(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        self.record(attempt)
        if self.trace is not None and attempt.skipped:
            self.trace.skipped(attempt)

    def run(self, call: Call[T]) -> Coroutine[Any, Any, tuple[Deployment, T, int]]:
        """A plain call's chain run; where the request is traced, each try in a span.
        (Not a coroutine itself: the untraced way costs no frame more than before.)"""
        return self._tries(call if self.trace is None else self.trace.called(call))

    async def _tries(self, call: Call[T], positions: Sequence[int] | None = None
                     ) -> tuple[Deployment, T, int]:
        """The first model's answer that succeeds, trying as the policy says; with the
        position of the model that answered, for a stream that may resume later.
        `positions` narrows the models tried (a resume tries only those that can)."""
        if positions is None:
            positions = range(len(self.models))
        last = positions[-1] if positions else -1
        for position in positions:
            deployment = self.models[position]
            breaker = self.store.breaker(deployment.name, _settings(deployment.breaker))
            retry = deployment.retry
            adapter = self.adapters[deployment.provider.name]
            for attempt in range(1, max(1, retry.attempts) + 1):
                if not breaker.allows():
                    self.note(Attempt(deployment.name, deployment.provider.name,
                                      "skipped: breaker open"))
                    break
                figures = self.store.figures(deployment.name)
                figures.in_flight += 1
                started = self.clock()
                try:
                    result = await call(adapter, deployment, deployment.timeouts)
                except UpstreamError as failure:
                    breaker.record(failed=failure.counts_against_upstream)  # before the gauge
                    self.note(Attempt(deployment.name, deployment.provider.name, failure.label,
                                      self.clock() - started))
                    if not failure.worth_falling_back:
                        raise refused(failure) from failure
                    if failure.kind == "timeout" and position < last:
                        break
                    told = failure.retry_after
                    if told is not None and told > retry.backoff_max and position < last:
                        break  # told to wait longer than the policy waits: go elsewhere now
                    if attempt < retry.attempts and failure.matches(retry.on):
                        await self.sleep(backoff.delay(attempt, retry.backoff_min,
                                                       retry.backoff_max, told))
                        continue
                    break
                except BaseException:
                    breaker.abandon()
                    raise
                finally:
                    figures.in_flight -= 1
                seconds = self.clock() - started
                figures.observe(seconds)
                breaker.record(failed=False)
                self.note(Attempt(deployment.name, deployment.provider.name, "ok", seconds))
                return deployment, result, position
        raise self.exhausted()

    def exhausted(self) -> GatewayError:
        """Every target failed: 504 if they all timed out, 503 if none could be tried."""
        tried = [a for a in self.attempts if not a.skipped]
        summary = "; ".join(f"{a.model} ({a.provider}): {a.outcome}" for a in self.attempts)
        if not tried:
            return GatewayError(503, f"no target could be tried: {summary or 'none left'}",
                                "no_target_available")
        if all(a.outcome == "timeout" for a in tried):
            return GatewayError(504, f"every target timed out: {summary}", "upstream_timeout")
        return GatewayError(502, f"every target failed: {summary}", "upstream_failed")

    async def open_stream(self, body: Body, opener: Opener
                          ) -> tuple[Deployment, AsyncIterator[Body]]:
        """A stream whose first chunk has arrived (fallback ends there)."""
        deployment, (first, chunks), position = await self._tries(
            _first_chunk(opener, body, self.trace))
        return deployment, self._stream(deployment, first, chunks, position, body, opener)

    async def _stream(self, deployment: Deployment, first: Body, chunks: AsyncIterator[Body],
                      position: int, body: Body, opener: Opener) -> AsyncIterator[Body]:
        """The stream from its first chunk; a cut one resumed where the policy says so."""
        delivered = _Text()
        delivered.add(first)
        try:
            yield first
            while True:
                try:
                    async for chunk in chunks:
                        delivered.add(chunk)
                        yield chunk
                    return
                except UpstreamError as cut:
                    resumed = await self._resume(deployment, cut, delivered, position, body,
                                                 opener)
                    if resumed is None:
                        raise
                    await closed(chunks)
                    deployment, chunks, position = resumed
        finally:
            await closed(chunks)

    async def _resume(self, cut_at: Deployment, cut: UpstreamError, delivered: _Text,
                      position: int, body: Body, opener: Opener
                      ) -> tuple[Deployment, AsyncIterator[Body], int] | None:
        """The stream continued by a later model, from the text delivered so far;
        None where the policy does not ask for it or no model can take it."""
        self.store.breaker(cut_at.name, _settings(cut_at.breaker)).record(
            failed=cut.counts_against_upstream)
        self.note(Attempt(cut_at.name, cut_at.provider.name, f"cut: {cut.label}"))
        if not cut_at.retry.resume or not delivered.resumable:
            return None
        prefixed = {**body, "messages": [*body.get("messages", []),
                                         {"role": "assistant", "content": delivered.text}]}
        able = [i for i in range(position + 1, len(self.models)) if self.models[i].model.prefill]
        if not able:
            return None
        try:
            deployment, (first, chunks), position = await self._tries(
                _first_chunk(opener, prefixed, self.trace, continuing=True), able)
        except GatewayError:
            return None  # the cut's own error is the one the client should see
        return deployment, _joined(first, chunks, delivered.id), position


class _Text:
    """The answer's text as the client has it, and whether a resume could rebuild it."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.resumable = True
        self.id: object = None  # the stream's id, which a resumed one keeps

    def add(self, chunk: Body) -> None:
        if self.id is None:
            self.id = chunk.get("id")
        if "choices" not in chunk:  # another API's event: a resume continues chat only
            self.resumable = False
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or choice.get("index", 0) != 0:
                self.resumable = False  # only one choice's text can be handed on
            content = delta.get("content")
            if isinstance(content, str):
                self.parts.append(content)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _first_chunk(opener: Opener, body: Body, trace: tracing.Scope | None,
                 continuing: bool = False) -> Call[tuple[Body, AsyncIterator[Body]]]:
    """A stream's opening, which ends at its first chunk, as one try of the chain
    (in a span that lasts as long as the stream, where the request is traced)."""
    async def first(adapter: Adapter, deployment: Deployment, timeouts: Timeouts
                    ) -> tuple[Body, AsyncIterator[Body]]:
        chunks = opener(adapter, deployment, body, timeouts)
        try:
            chunk = await anext(chunks)
            if continuing:  # the client has its role chunk: skip to the first words
                while not _has_content(chunk):
                    chunk = await anext(chunks)
            return chunk, chunks
        except StopAsyncIteration as exc:
            raise UpstreamError("malformed", f"{deployment.provider.name}: empty stream") \
                from exc
        except BaseException:
            await closed(chunks)  # release the connection now
            raise
    return first if trace is None else trace.opened(first)


def _has_content(chunk: Body) -> bool:
    return any((c.get("delta") or {}).get("content") or c.get("finish_reason")
               for c in chunk.get("choices") or ())


async def _joined(first: Body, rest: AsyncIterator[Body], stream_id: object
                  ) -> AsyncIterator[Body]:
    """A resumed stream, under the id of the stream the client has been reading."""
    first["id"] = stream_id
    yield first
    try:
        async for chunk in rest:
            chunk["id"] = stream_id
            yield chunk
    finally:
        await closed(rest)


def refused(failure: UpstreamError) -> GatewayError:
    """An upstream's own refusal of the request, passed on with its status and code."""
    status = failure.status or 400
    return GatewayError(status if 400 <= status < 500 else 400, failure.message,
                        failure.code or "upstream_rejected")
