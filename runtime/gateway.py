"""The gateway: a loaded policy, swapped whole on reload, and the request pipeline.

A request takes the `Loaded` snapshot current when it arrives and finishes on
it, whatever reloads happen meanwhile. Reloading compiles in a thread, off the
event loop, and swaps the snapshot in one assignment; a policy that does not
compile is refused and the old one keeps serving. Breakers and pool figures
live in `Live`, keyed by model name, so they survive the swap.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from compiler.driver import check
from compiler.explain import route
from compiler.graph import Graph
from compiler.policy import Model, Policy
from compiler.request import Request
from dsl.diagnostics import Diagnostic
from policies.breaker import State
from runtime import providers
from runtime.access_log import AccessLog
from runtime.chain import Attempt, Chain, Live
from runtime.errors import GatewayError
from runtime.metrics import Metrics
from runtime.providers.base import Adapter, Body, Timeouts
from runtime.schemas import ChatRequest, EmbeddingsRequest, parse

GATEWAY_FIELDS = ("metadata",)  # read by the gateway, not passed upstream


@dataclass
class Loaded:
    path: str
    graph: Graph
    version: str
    loaded_at: float
    adapters: dict[str, Adapter]
    sources: list[str]

    @property
    def policy(self) -> Policy:
        return self.graph.policy


@dataclass
class Answer:
    """What the pipeline hands the HTTP layer: a body or a stream, and what served it."""

    model: Model
    attempts: list[Attempt]
    body: Body | None = None
    first: Body | None = None
    rest: AsyncIterator[Body] | None = None
    rule: str = ""

    def tried(self) -> int:
        return sum(not a.outcome.startswith("skipped") for a in self.attempts)


def estimate_tokens(body: Body, endpoint: str) -> int:
    """Input tokens, estimated at four characters a token (no tokenizer is loaded)."""
    if endpoint == "embeddings":
        given = body.get("input")
        items = given if isinstance(given, list) else [given]
        return math.ceil(sum(len(str(item)) for item in items) / 4)
    characters = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            characters += len(content)
        elif isinstance(content, list):
            characters += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return math.ceil(characters / 4)


def cost(model: Model, usage: Mapping[str, Any] | None) -> float:
    usage = usage or {}
    return (usage.get("prompt_tokens") or 0) * (model.input_price or 0.0) + \
        (usage.get("completion_tokens") or 0) * (model.output_price or 0.0)


@dataclass
class Gateway:
    path: str
    env: dict[str, str]
    live: Live = field(default_factory=Live)
    metrics: Metrics = field(init=False)
    log: AccessLog = field(default_factory=AccessLog)
    current: Loaded | None = None
    refused: dict[str, Any] | None = None
    session: aiohttp.ClientSession | None = None
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.live.states)

    # ------------------------------------------------------------ loading

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))
        outcome = await self.reload()
        if self.current is None:
            raise SystemExit(outcome["message"])

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        self.log.flush()

    async def reload(self) -> dict[str, Any]:
        """Compile the policy file again and swap it in, or refuse it and keep the old one."""
        async with self.reload_lock:
            ctx = await asyncio.to_thread(check, self.path, self.env)
            errors = [d for d in ctx.diagnostics if d.is_error]
            if errors or ctx.graph is None:
                self.refused = {"at": time.time(), "diagnostics": [_described(d) for d in errors]}
                self.metrics.reloads.add(("refused",))
                first = errors[0] if errors else None
                where = f"{first.span.file}:{first.span.line}:{first.span.column}: " if first \
                    else ""
                return {"outcome": "refused", "version": self.version,
                        "message": f"policy refused: {where}{first.message if first else ''}",
                        "diagnostics": self.refused["diagnostics"]}
            assert self.session is not None
            adapters = {name: providers.adapter(p, self.session, self.env)
                        for name, p in ctx.graph.policy.providers.items()}
            self.current = Loaded(self.path, ctx.graph, ctx.graph.version, time.time(), adapters,
                                  sorted(ctx.sources))
            self.refused = None
            settle_heap()
            self.metrics.reloads.add(("loaded",))
            return {"outcome": "loaded", "version": self.version}

    @property
    def version(self) -> str:
        return self.current.version if self.current else ""

    # ----------------------------------------------------------- requests

    def attributes(self, loaded: Loaded, body: Body, headers: Mapping[str, str],
                   endpoint: str, stream: bool = False, tools: bool = False,
                   max_tokens: int | None = None, temperature: float | None = None) -> Request:
        """The request as the policy sees it: identity, parameters, headers, metadata."""
        auth = loaded.policy.auth
        user = team = key = None
        if auth.mode == "headers":
            user = headers.get(auth.user_header.lower())
            team = headers.get(auth.team_header.lower())
        elif auth.mode == "keys":
            raise GatewayError(401, "this policy authenticates with virtual keys, which this "
                               "build of gwc does not issue yet; use auth { mode = headers } "
                               "or mode = none", "invalid_api_key")
        meta = {k.removeprefix("x-gw-meta-"): v for k, v in headers.items()
                if k.startswith("x-gw-meta-")}
        meta.update(body.get("metadata") or {})
        return Request(model=str(body.get("model")), user=user, team=team, key=key,
                       endpoint=endpoint, stream=stream, tools=tools,
                       tokens=estimate_tokens(body, endpoint), max_tokens=max_tokens,
                       temperature=temperature, headers=headers, meta=meta)

    def targets(self, loaded: Loaded, request: Request) -> tuple[list[str], str]:
        plan = loaded.graph.plan(request)
        if plan.rule is None:
            raise GatewayError(404, f"no route for model '{request.model}'", "no_route",
                               param="model")
        rule = loaded.policy.rules[plan.rule]
        where = f"{rule.source.file}:{rule.source.line}"
        if rule.deny is not None:
            raise GatewayError(403, rule.deny, "denied")
        chain = route(loaded.policy, rule, request)
        if not chain:
            raise GatewayError(404, f"the model '{request.model}' does not exist here",
                               "model_not_found", param="model")
        return chain, where

    def observe(self, attempt: Attempt) -> None:
        if not attempt.outcome.startswith("skipped"):
            self.metrics.upstream.observe((attempt.model, attempt.provider, attempt.outcome),
                                          attempt.seconds)

    async def chat(self, loaded: Loaded, body: Body, headers: Mapping[str, str]) -> Answer:
        parsed: ChatRequest = parse(ChatRequest, body)
        request = self.attributes(loaded, body, headers, "chat", stream=parsed.stream,
                                  tools=bool(parsed.tools),
                                  max_tokens=parsed.max_tokens or parsed.max_completion_tokens,
                                  temperature=parsed.temperature)
        targets, rule = self.targets(loaded, request)
        payload = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
        chain = Chain(loaded.policy, loaded.adapters, self.live, self.observe)
        if parsed.stream:
            model, first, rest = await chain.open_stream(targets, request.tokens, payload)
            return Answer(model, chain.attempts, first=first, rest=rest, rule=rule)

        async def complete(adapter: Adapter, model: Model, timeouts: Timeouts) -> Body:
            return await adapter.complete(model, payload, timeouts)
        model, answer = await chain.run(targets, request.tokens, complete)
        return Answer(model, chain.attempts, body=answer, rule=rule)

    async def embeddings(self, loaded: Loaded, body: Body, headers: Mapping[str, str]) -> Answer:
        parse(EmbeddingsRequest, body)
        request = self.attributes(loaded, body, headers, "embeddings")
        targets, rule = self.targets(loaded, request)
        payload = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
        chain = Chain(loaded.policy, loaded.adapters, self.live, self.observe)

        async def embed(adapter: Adapter, model: Model, timeouts: Timeouts) -> Body:
            return await adapter.embed(model, payload, timeouts)
        model, answer = await chain.run(targets, request.tokens, embed)
        return Answer(model, chain.attempts, body=answer, rule=rule)

    def breakers(self) -> dict[str, Any]:
        return {name: {"state": State(b.state).name.lower(), "recent_failures": b.failures}
                for name, b in sorted(self.live.breakers.items())}


def settle_heap() -> None:
    """Collect once, then hide every object that survives from the cyclic collector.

    A loaded policy is tens of thousands of objects that live until the next
    reload, and every full collection while serving would rescan them all
    (about 10 us a request under load, bench.overhead). Unfreezing first hands
    the previous policy's objects back to the collector, so a reload leaks
    nothing.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _described(d: Diagnostic) -> dict[str, Any]:
    return {"file": d.span.file, "line": d.span.line, "column": d.span.column,
            "code": d.code, "message": d.message}

