"""The APIs the gateway serves, each described once for the one pipeline.

An endpoint says how its body is checked, what it tells the policy (the
`endpoint` attribute and the request's parameters), how its input tokens are
estimated and which adapter call serves it. The pipeline does the rest the
same way for all of them; an API added later is one more `Endpoint`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from compiler.compiled import Deployment, Timeouts
from runtime.providers.base import Adapter, Body
from runtime.schemas import ChatRequest, EmbeddingsRequest

GATEWAY_FIELDS = ("metadata",)  # read by the gateway, not passed upstream


class Call(Protocol):
    """An adapter's call for an endpoint; `body` comes last, so that the chain
    stage binds it with `functools.partial` (C-level: no frame of its own)."""

    def __call__(self, adapter: Adapter, deployment: Deployment, timeouts: Timeouts,
                 body: Body) -> Awaitable[Body]: ...


@dataclass(frozen=True)
class Endpoint:
    name: str  # the policy's `endpoint` attribute
    path: str
    schema: type[BaseModel]
    parameters: Callable[[Any], dict[str, Any]]  # stream, tools, max_tokens, temperature
    tokens: Callable[[Body], int]  # estimated input tokens
    call: Call
    stream: Callable[[Adapter, Deployment, Body, Timeouts], AsyncIterator[Body]] | None = None

    def payload(self, body: Body) -> Body:
        """The body as the upstream gets it: the gateway's own fields taken out."""
        return {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}


def _characters(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return 0


def chat_tokens(body: Body) -> int:
    """Input tokens, estimated at four characters a token (no tokenizer is loaded)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    return math.ceil(sum(_characters(m.get("content")) for m in messages
                         if isinstance(m, dict)) / 4)


def embedding_tokens(body: Body) -> int:
    given = body.get("input")
    items = given if isinstance(given, list) else [given]
    return math.ceil(sum(len(str(item)) for item in items) / 4)


def _chat_parameters(parsed: ChatRequest) -> dict[str, Any]:
    return {"stream": parsed.stream, "tools": bool(parsed.tools),
            "max_tokens": parsed.max_tokens or parsed.max_completion_tokens,
            "temperature": parsed.temperature}


CHAT = Endpoint(
    "chat", "/v1/chat/completions", ChatRequest, _chat_parameters, chat_tokens,
    call=lambda adapter, target, timeouts, body: adapter.complete(target.model, body, timeouts),
    stream=lambda adapter, target, body, timeouts: adapter.stream(target.model, body, timeouts))

EMBEDDINGS = Endpoint(
    "embeddings", "/v1/embeddings", EmbeddingsRequest, lambda parsed: {}, embedding_tokens,
    call=lambda adapter, target, timeouts, body: adapter.embed(target.model, body, timeouts))

ENDPOINTS = (CHAT, EMBEDDINGS)
