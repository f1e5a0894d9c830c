"""The built-in `mock` provider: answers without a network.

Its reply names the model (the upstream `name`), counts tokens as words,
streams word by word when asked, and its `latency`, `fail_rate` and
`fail_status` settings let tests and demos exercise fallbacks.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from compiler.compiled import Model, Timeouts
from runtime.errors import UpstreamError
from runtime.providers.base import Adapter, Body


def words(messages: Any) -> int:
    count = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            count += len(content.split())
        elif isinstance(content, list):
            count += sum(len(str(part.get("text", "")).split()) for part in content
                         if isinstance(part, dict))
    return count


def _vector(text: str) -> list[float]:
    """A deterministic 8-dimensional stand-in embedding (str hashes vary per process)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [byte / 255 for byte in digest[:8]]


class Mock(Adapter):
    async def _behave(self, bound: float) -> None:
        """`latency` is the time to the answer, or to a stream's first chunk: it is
        bounded by `total` for the one and by `first_byte` for the other."""
        if self.provider.latency > bound:
            await asyncio.sleep(bound)
            raise UpstreamError("timeout", f"{self.provider.name}: no answer within {bound:g}s")
        await asyncio.sleep(self.provider.latency)
        if self.provider.fail_rate and random.random() < self.provider.fail_rate:
            status = self.provider.fail_status
            raise UpstreamError("status", f"{self.provider.name} answered {status}: mock failure",
                                status=status)

    async def check_health(self, model: Model, timeout: float) -> None:
        await self._behave(timeout)

    def reply(self, model: Model, body: Body) -> str:
        return f"mock reply from {model.upstream}"

    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        await self._behave(timeouts.total)
        text = self.reply(model, body)
        prompt, completion = words(body.get("messages")), len(text.split())
        return {
            "id": f"chatcmpl-mock-{time.monotonic_ns()}", "object": "chat.completion",
            "created": int(time.time()), "model": model.upstream,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }

    async def stream(self, model: Model, body: Body, timeouts: Timeouts) -> AsyncIterator[Body]:
        await self._behave(timeouts.first_byte)
        base = {"id": f"chatcmpl-mock-{time.monotonic_ns()}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model.upstream}
        text = self.reply(model, body).split()
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}
        for i, word in enumerate(text):
            piece = word if i == 0 else " " + word
            yield {**base, "choices": [{"index": 0, "delta": {"content": piece},
                                        "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        prompt = words(body.get("messages"))
        yield {**base, "choices": [], "usage": {
            "prompt_tokens": prompt, "completion_tokens": len(text),
            "total_tokens": prompt + len(text)}}

    async def embed(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        await self._behave(timeouts.total)
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = [{"object": "embedding", "index": i, "embedding": _vector(str(item))}
                for i, item in enumerate(items)]
        tokens = sum(len(str(item).split()) for item in items)
        return {"object": "list", "data": data, "model": model.upstream,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
