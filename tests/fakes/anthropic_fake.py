"""A fake of Anthropic's Messages API, plain and streamed, with tool use.

It answers with a `tool_use` block when the request offers tools and the last
turn is not a tool result (except for the model `plain`, which never calls
one); otherwise with text naming the model. Besides the
models `Script` knows: `too-long` answers Anthropic's 400 for a prompt over
the context; `overloaded` its 529 `overloaded_error`; `no-stop` streams
everything but the closing `message_stop`; `bad-event` streams a malformed
event after `message_start`; `junk` answers 200 with a body that is not JSON;
`cached` answers with the usage of a prompt cache hit that also wrote to the
cache (`CACHED_USAGE`): Anthropic counts the cache's reads and writes apart
from `input_tokens`, and streams them in `message_start`, the output's total
in `message_delta`; `thinking` answers a signed thinking block before its
text, as a model with extended thinking does. `POST /v1/messages/count_tokens`
counts a word a token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import API_KEY, Script

PLAIN_USAGE: dict[str, int] = {"input_tokens": 12, "output_tokens": 6,
                               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
CACHED_USAGE: dict[str, int] = {"input_tokens": 50, "output_tokens": 400,
                                "cache_creation_input_tokens": 1000,
                                "cache_read_input_tokens": 3000}


def _error(status: int, kind: str, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status,
                        headers=headers)


def _content(body: dict[str, Any]) -> list[dict[str, Any]]:
    last = body["messages"][-1]["content"]
    answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    if body.get("tools") and not answered and body["model"] != "plain":
        return [{"type": "tool_use", "id": "toolu_fake1", "name": body["tools"][0]["name"],
                 "input": {"city": "Paris"}}]
    said = {"type": "text", "text": Script.said(body["model"], last)}
    if body["model"] == "thinking":
        return [{"type": "thinking", "thinking": "The user greets me.",
                 "signature": "sig-fake"}, said]
    return [said]


def _authorized(request: Request) -> bool:
    key = request.headers.get("x-api-key") or \
        request.headers.get("authorization", "").removeprefix("Bearer ")
    return key == API_KEY


def app(script: Script) -> Starlette:
    async def count_tokens(request: Request) -> Response:
        if not _authorized(request):
            return _error(401, "authentication_error", "invalid x-api-key")
        body = await request.json()
        script.record(body["model"], dict(request.headers), body)
        words = len(json.dumps([body.get("system"), body["messages"]]).split())
        return JSONResponse({"input_tokens": words})

    async def messages(request: Request) -> Response:
        if not _authorized(request):
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version header is required")
        body = await request.json()
        if "max_tokens" not in body:
            return _error(400, "invalid_request_error", "max_tokens: Field required")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return _error(400, "invalid_request_error",
                          "messages: at least one message is required")
        call = script.record(body["model"], dict(request.headers), body)
        failure = await script.failure(body["model"], call)
        if failure:
            return _error(failure[0], "api_error", f"scripted {failure[0]}", failure[1])
        if body["model"] == "too-long":
            return _error(400, "invalid_request_error",
                          "prompt is too long: 208310 tokens > 200000 maximum")
        if body["model"] == "overloaded":
            return _error(529, "overloaded_error", "Overloaded")
        if body["model"] == "junk":
            return Response(b"<html>upstream went away</html>", 200,
                            media_type="application/json")
        content = _content(body)
        stop = "tool_use" if content[0]["type"] == "tool_use" else "end_turn"
        usage = dict(CACHED_USAGE if body["model"] == "cached" else PLAIN_USAGE)
        message = {"id": "msg_fake", "type": "message", "role": "assistant",
                   "model": body["model"], "content": content, "stop_reason": stop,
                   "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return JSONResponse(message)

        async def events() -> AsyncIterator[bytes]:
            def event(kind: str, data: dict[str, Any]) -> bytes:
                return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
            yield event("message_start", {"message": {**message, "content": [],
                                                      "stop_reason": None,
                                                      "usage": {**usage, "output_tokens": 1}}})
            yield event("ping", {})
            if body["model"] == "bad-event":
                yield b'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n'
            if content[0]["type"] == "thinking":
                thought = content.pop(0)
                yield event("content_block_start", {"index": 0, "content_block": {
                    "type": "thinking", "thinking": ""}})
                yield event("content_block_delta", {"index": 0, "delta": {
                    "type": "thinking_delta", "thinking": thought["thinking"]}})
                yield event("content_block_delta", {"index": 0, "delta": {
                    "type": "signature_delta", "signature": thought["signature"]}})
                yield event("content_block_stop", {"index": 0})
            index = 1 if body["model"] == "thinking" else 0
            block = content[0]
            if block["type"] == "tool_use":
                yield event("content_block_start", {"index": index, "content_block": {
                    **block, "input": {}}})
                for piece in ('{"city": ', '"Paris"}'):
                    yield event("content_block_delta", {"index": index, "delta": {
                        "type": "input_json_delta", "partial_json": piece}})
            else:
                yield event("content_block_start", {"index": index, "content_block": {
                    "type": "text", "text": ""}})
                for i, piece in enumerate(Script.pieces(body["model"], block["text"])):
                    if body["model"] == "cut" and i == 1:
                        await asyncio.sleep(0.05)
                        raise ConnectionError("scripted cut")
                    yield event("content_block_delta", {"index": index, "delta": {
                        "type": "text_delta", "text": piece}})
            yield event("content_block_stop", {"index": index})
            yield event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                          "usage": {"output_tokens": usage["output_tokens"]}})
            if body["model"] != "no-stop":
                yield event("message_stop", {})
        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"]),
                             Route("/v1/messages/count_tokens", count_tokens,
                                   methods=["POST"])])
