"""The APIs the gateway serves, each described once for the one pipeline.

An endpoint says how its body is checked, what it tells the policy (the
`endpoint` attribute and the request's parameters), how its input tokens are
estimated, which adapter call serves it and in which wire format
(runtime/formats) its answers, streams and errors go back. The pipeline does
the rest the same way for all of them; an API added later is one more
`Endpoint`.

A request in a format the target's provider speaks natively goes as the
client wrote it (Messages to Anthropic); to any other it goes through chat,
the adapters' common form, and its answer comes back translated.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from compiler.compiled import Deployment, Timeouts
from runtime.errors import GatewayError
from runtime.formats import chat, messages, responses
from runtime.formats.base import Format, Slot, renamed
from runtime.formats.chat import CHAT as CHAT_FORMAT
from runtime.providers.anthropic import Anthropic
from runtime.providers.base import Adapter, Body
from runtime.providers.openai import OpenAI
from runtime.providers.wire import Malformed
from runtime.schemas import (
    ChatRequest,
    CountTokensRequest,
    EmbeddingsRequest,
    MessagesRequest,
    ResponsesRequest,
)


@dataclass(frozen=True, slots=True)
class Sent:
    """What a call takes besides the body: the client's headers an upstream of its own
    API gets, and a Responses follow-up's stored history (oldest first)."""

    headers: Mapping[str, str]
    history: tuple[Body, ...] = ()


NOTHING_MORE = Sent({})


class Call(Protocol):
    """An adapter's call for an endpoint; `body` and what is `sent` with it come last,
    so that the chain stage binds them with `functools.partial` (C-level: no frame of
    its own)."""

    def __call__(self, adapter: Adapter, deployment: Deployment, timeouts: Timeouts,
                 body: Body, sent: Sent) -> Awaitable[Body]: ...


class Opener(Protocol):
    def __call__(self, adapter: Adapter, deployment: Deployment, body: Body,
                 timeouts: Timeouts, sent: Sent) -> AsyncIterator[Body]: ...


def _metadata(parsed: Any) -> dict[str, str]:
    return parsed.metadata or {}


@dataclass(frozen=True)
class Endpoint:
    name: str  # the policy's `endpoint` attribute
    path: str
    schema: type[BaseModel]
    parameters: Callable[[Any], dict[str, Any]]  # stream, tools, max_tokens, temperature
    tokens: Callable[[Body], int]  # estimated input tokens
    call: Call
    stream: Opener | None = None
    format: Format = CHAT_FORMAT
    meta: Callable[[Any], dict[str, str]] = _metadata  # the policy's `meta.*` from the body
    gateway_fields: tuple[str, ...] = ("metadata",)  # read by the gateway, not sent upstream
    forwarded: tuple[str, ...] = ()  # client headers an upstream of the same API gets
    cached: bool = True  # whether a `cache` block may keep its answers
    stored: bool = False  # answers kept for follow-ups (runtime/pipeline/conversation.py)
    prompt: Callable[[Body], Iterator[Slot]] = chat.prompt  # the texts input guards read

    def payload(self, body: Body) -> Body:
        """The body as the upstream gets it: the gateway's own fields taken out."""
        return {k: v for k, v in body.items() if k not in self.gateway_fields}

    def sent(self, headers: Mapping[str, str], history: tuple[Body, ...] = ()) -> Sent:
        if not self.forwarded and not history:
            return NOTHING_MORE
        return Sent({name: headers[name] for name in self.forwarded if headers.get(name)},
                    history)


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
    characters = 0  # on every chat request: a loop, no generator
    for message in messages:
        if isinstance(message, dict):
            characters += _characters(message.get("content"))
    return math.ceil(characters / 4)


def embedding_tokens(body: Body) -> int:
    given = body.get("input")
    items = given if isinstance(given, list) else [given]
    return math.ceil(sum(len(str(item)) for item in items) / 4)


def embedding_texts(body: Body) -> Iterator[Slot]:
    """An embeddings request's texts: its input, one string or a list of them (token
    ids are no text)."""
    given = body.get("input")
    if isinstance(given, str):
        yield body, "input"
    for i, item in enumerate(given if isinstance(given, list) else ()):
        if isinstance(item, str):
            yield given, i


def _chat_parameters(parsed: ChatRequest) -> dict[str, Any]:
    return {"stream": parsed.stream, "tools": bool(parsed.tools),
            "max_tokens": parsed.max_tokens or parsed.max_completion_tokens,
            "temperature": parsed.temperature}


def messages_tokens(body: Body) -> int:
    """A Messages request's input tokens, estimated as chat's are: its system prompt,
    its turns' text and its tool results."""
    characters = _characters(body.get("system"))
    for turn in body.get("messages") or ():
        content = turn.get("content") if isinstance(turn, dict) else None
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_result":
                characters += _characters(block.get("content"))
    return math.ceil(characters / 4) + chat_tokens(body)


def _messages_parameters(parsed: MessagesRequest) -> dict[str, Any]:
    return {"stream": parsed.stream, "tools": bool(parsed.tools),
            "max_tokens": parsed.max_tokens, "temperature": parsed.temperature}


def _back(adapter: Adapter, convert: Callable[[], Body]) -> Body:
    """A checked chat answer converted to the client's API; what the adapter's check
    let through and the conversion cannot read is the upstream's junk, as a malformed
    answer (the chain falls back from it)."""
    try:
        return convert()
    except Malformed as exc:
        raise adapter.malformed(str(exc)) from exc


async def _messages(adapter: Adapter, deployment: Deployment, timeouts: Timeouts, body: Body,
                    sent: Sent) -> Body:
    model = deployment.model
    origins: list[str] = []
    if isinstance(adapter, Anthropic):
        return await adapter.native(model, body, timeouts, sent.headers)
    request = messages.chat_request(body, origins)
    try:
        answer = await adapter.complete(model, request, timeouts)
    except GatewayError as refusal:
        raise renamed(refusal, origins) from None
    return _back(adapter, lambda: messages.message(answer))


def _messages_stream(adapter: Adapter, deployment: Deployment, body: Body, timeouts: Timeouts,
                     sent: Sent) -> AsyncIterator[Body]:
    model = deployment.model
    origins: list[str] = []
    if isinstance(adapter, Anthropic):
        return adapter.native_stream(model, body, timeouts, sent.headers)
    request = messages.chat_request(body, origins)
    return messages.from_chat_stream(adapter.stream(model, request, timeouts), origins)


async def _count_tokens(adapter: Adapter, deployment: Deployment, timeouts: Timeouts,
                        body: Body, sent: Sent) -> Body:
    """Anthropic counts its own; for any other provider the gateway's estimate, since
    none of them has a call for it."""
    if isinstance(adapter, Anthropic):
        return await adapter.count_tokens(deployment.model, body, timeouts, sent.headers)
    messages.chat_request(body)  # what could not go to this provider is refused here too
    return {"input_tokens": messages_tokens(body)}


def responses_tokens(body: Body) -> int:
    """A Responses request's input tokens, estimated as chat's are: its instructions
    and its items' text (a follow-up's history is counted by the plan)."""
    characters = _characters(body.get("instructions"))
    given = body.get("input")
    for item in given if isinstance(given, list) else [given]:
        if isinstance(item, str):
            characters += len(item)
        elif isinstance(item, dict):
            characters += _characters(item.get("content")) + _characters(item.get("output")) \
                + _characters(item.get("arguments"))
    return math.ceil(characters / 4)


def _responses_parameters(parsed: ResponsesRequest) -> dict[str, Any]:
    return {"stream": parsed.stream, "tools": bool(parsed.tools),
            "max_tokens": parsed.max_output_tokens, "temperature": parsed.temperature}


def _natively(adapter: Adapter) -> OpenAI | None:
    return adapter if isinstance(adapter, OpenAI) and adapter.speaks_responses else None


async def _responses(adapter: Adapter, deployment: Deployment, timeouts: Timeouts, body: Body,
                     sent: Sent) -> Body:
    model, native = deployment.model, _natively(adapter)
    if native is not None:
        return await native.respond(model, responses.inline(body, sent.history), timeouts)
    origins: list[str] = []
    request = responses.to_chat(body, list(sent.history), origins)
    try:
        completion = await adapter.complete(model, request, timeouts)
    except GatewayError as refusal:
        raise renamed(refusal, origins) from None
    return _back(adapter, lambda: responses.from_chat(completion, body, responses.new_id(),
                                                      time.time()))


def _responses_stream(adapter: Adapter, deployment: Deployment, body: Body, timeouts: Timeouts,
                      sent: Sent) -> AsyncIterator[Body]:
    model, native = deployment.model, _natively(adapter)
    if native is not None:
        return native.respond_stream(model, responses.inline(body, sent.history), timeouts)
    origins: list[str] = []
    request = responses.to_chat(body, list(sent.history), origins)
    return responses.from_chat_stream(adapter.stream(model, request, timeouts), body, origins)


CHAT = Endpoint(
    "chat", "/v1/chat/completions", ChatRequest, _chat_parameters, chat_tokens,
    call=lambda adapter, target, timeouts, body, sent: adapter.complete(
        target.model, body, timeouts),
    stream=lambda adapter, target, body, timeouts, sent: adapter.stream(
        target.model, body, timeouts))

EMBEDDINGS = Endpoint(
    "embeddings", "/v1/embeddings", EmbeddingsRequest, lambda parsed: {}, embedding_tokens,
    call=lambda adapter, target, timeouts, body, sent: adapter.embed(
        target.model, body, timeouts), prompt=embedding_texts)

MESSAGES = Endpoint(
    "messages", "/v1/messages", MessagesRequest, _messages_parameters, messages_tokens,
    call=_messages, stream=_messages_stream, format=messages.MESSAGES,
    meta=lambda parsed: {}, gateway_fields=(), forwarded=messages.FORWARDED,
    prompt=messages.prompt)

COUNT_TOKENS = Endpoint(
    "messages", "/v1/messages/count_tokens", CountTokensRequest,
    lambda parsed: {"stream": False, "tools": bool(parsed.tools)}, messages_tokens,
    call=_count_tokens, format=messages.MESSAGES, meta=lambda parsed: {}, gateway_fields=(),
    forwarded=messages.FORWARDED, cached=False, prompt=messages.prompt)

RESPONSES = Endpoint(
    "responses", "/v1/responses", ResponsesRequest, _responses_parameters, responses_tokens,
    call=_responses, stream=_responses_stream, format=responses.RESPONSES, stored=True,
    prompt=responses.prompt)

ENDPOINTS = (CHAT, EMBEDDINGS, MESSAGES, COUNT_TOKENS, RESPONSES)
