"""OpenAI's chat completions: the internal form itself, as the pipeline reads it.

A stream is `data:` events ended by `data: [DONE]`. gwc always asks an
upstream for a stream's usage, for its own accounting, but a client gets the
closing usage chunk (`choices: []`) only when it asked with
`stream_options.include_usage`, as OpenAI's API does (the openai SDK's
`chunk.choices[0].delta` loop fails on a chunk it did not ask for); that
chunk carries the stream's cost as `usage.cost` (USD, as OpenRouter does),
since a stream's headers leave before its cost is known.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from runtime import pricing
from runtime.errors import GatewayError
from runtime.formats.base import Body, Format, Slot, texts_of

if TYPE_CHECKING:
    from runtime.pipeline.exchange import Exchange


class Chat(Format):
    name = "chat"
    done = b"data: [DONE]\n\n"

    def usage(self, raw: Body) -> Body:
        return raw

    def chunk_usage(self, chunk: Body) -> Body | None:
        usage = chunk.get("usage")
        return usage if usage and isinstance(usage, dict) else None

    def chunk_text(self, chunk: Body) -> int:
        delivered = 0
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                delivered += len(delta["content"])
        return delivered

    def shown(self, exchange: Exchange, chunk: Body) -> Body | None:
        usage = chunk.get("usage")
        if not usage or chunk.get("choices"):
            return chunk
        if not exchange.include_usage:
            return None
        deployment = exchange.answered_by
        if deployment is None or not isinstance(usage, dict):
            return chunk
        return {**chunk, "usage": {**usage, "cost": round(
            pricing.cost(exchange.usage, deployment.model), 10)}}

    def frame(self, chunk: Body) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def broken(self, error: GatewayError) -> bytes:
        return b"data: " + orjson.dumps(error.body()) + b"\n\n"

    def fresh(self, answer: Body) -> Body:
        return {**answer, "id": f"chatcmpl-gw{secrets.token_hex(12)}",
                "created": int(time.time())}

    async def replay(self, answer: Body, include_usage: bool) -> AsyncIterator[Body]:
        """The role and the content (and tool calls) first, then each choice's finish,
        then the usage when asked for, as OpenAI sends them."""
        head = {"id": answer["id"], "object": "chat.completion.chunk",
                "created": answer["created"], "model": answer.get("model")}
        choices = answer.get("choices") or []
        for choice in choices:
            message = choice.get("message") or {}
            delta: Body = {"role": "assistant", "content": message.get("content")}
            if message.get("tool_calls"):
                delta["tool_calls"] = [{**call, "index": i}
                                       for i, call in enumerate(message["tool_calls"])]
            yield {**head, "choices": [{"index": choice.get("index", 0), "delta": delta,
                                        "finish_reason": None}]}
        for choice in choices:
            yield {**head, "choices": [{"index": choice.get("index", 0), "delta": {},
                                        "finish_reason": choice.get("finish_reason")}]}
        if include_usage and answer.get("usage"):
            yield {**head, "choices": [], "usage": answer["usage"]}

    def assembled(self, chunks: list[Body], usage: Body) -> Body | None:
        """Its text per choice and how each finished; None for tool calls, refusals and
        logprobs, which a replay could not give back as they came."""
        if not chunks:
            return None
        texts: dict[int, list[str]] = {}
        finished: dict[int, Any] = {}
        for chunk in chunks:
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if choice.get("logprobs") or any(value is not None
                                                 for name, value in delta.items()
                                                 if name not in ("role", "content")):
                    return None
                index = choice.get("index", 0)
                if isinstance(delta.get("content"), str):
                    texts.setdefault(index, []).append(delta["content"])
                if choice.get("finish_reason") is not None:
                    finished[index] = choice["finish_reason"]
        first = chunks[0]
        return {"id": first.get("id"), "object": "chat.completion",
                "created": first.get("created"), "model": first.get("model"),
                "choices": [{"index": i, "message": {"role": "assistant",
                                                     "content": "".join(texts.get(i, []))},
                             "finish_reason": finished.get(i)} for i in sorted(finished)],
                "usage": usage}

    def said(self, answer: Body) -> Iterator[Slot]:
        for choice in answer.get("choices") or ():
            if isinstance(choice, dict):
                yield from texts_of(choice.get("message"), "content")

    def delta(self, chunk: Body) -> Slot | None:
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            return delta, "content"
        return None

    def closes(self, chunk: Body) -> bool:
        """A choice's finish, a tool call's start, or the usage after the choices."""
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return True
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
                return True
            delta = choice.get("delta")
            if isinstance(delta, dict) and any(value is not None for name, value in delta.items()
                                               if name not in ("role", "content")):
                return True
        return False


def prompt(body: Body) -> Iterator[Slot]:
    """A chat request's texts: every message's, whatever its role."""
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        yield from texts_of(message, "content")


CHAT = Chat()
