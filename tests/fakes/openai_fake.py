"""A fake of OpenAI's API: chat completions (plain and streamed), embeddings, models.

Usage is 9 prompt and 3 completion tokens, except for the model `cached`,
whose usage has the details OpenAI sends for a prompt cache hit and a
reasoning model (`CACHED_USAGE`): the cached tokens are part of
`prompt_tokens`, the reasoning tokens part of `completion_tokens`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import API_KEY, Script

PLAIN_USAGE: dict[str, Any] = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
CACHED_USAGE: dict[str, Any] = {
    "prompt_tokens": 2000, "completion_tokens": 300, "total_tokens": 2300,
    "prompt_tokens_details": {"cached_tokens": 1500, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 200, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0,
                                  "rejected_prediction_tokens": 0}}


def usage_of(model: str) -> dict[str, Any]:
    """The usage object the fake answers `model` with."""
    return dict(CACHED_USAGE if model == "cached" else PLAIN_USAGE)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = {400: "invalid_request_error", 401: "authentication_error",
            429: "rate_limit_exceeded"}.get(status, "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": None,
                                   "code": None}}, status, headers=headers)


def app(script: Script) -> Starlette:
    async def chat(request: Request) -> Response:
        deployment = request.path_params.get("deployment")
        if deployment is not None:  # Azure: api-key header, api-version query, no body model
            if request.headers.get("api-key") != API_KEY:
                return _error(401, "Access denied due to invalid subscription key")
            if not request.query_params.get("api-version"):
                return _error(400, "Missing required query parameter: api-version")
        elif request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "Incorrect API key provided")
        body = await request.json()
        model = deployment or body["model"]
        call = script.record(model, dict(request.headers), body)
        if model == "hang" and not body.get("stream"):
            await script.hang(model, request.receive)
            return _error(500, "the caller hung up")
        failure = await script.failure(model, call)
        if failure:
            return _error(failure[0], f"scripted {failure[0]}", failure[1])
        text = f"hello from {model}"
        created = int(time.time())
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": created,
                "model": model, "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                     "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage_of(model)})

        async def events() -> AsyncIterator[bytes]:
            base: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                                    "created": created, "model": model,
                                    "system_fingerprint": "fp_fake"}
            pieces = [{"role": "assistant", "content": ""}] + \
                [{"content": w} for w in ("hello", " from", f" {model}")]
            for i, delta in enumerate(pieces):
                if model == "hang" and i == 1:  # one chunk out, then wait for a hang-up
                    await script.hang(model + "-stream", request.receive)
                    return
                if model == "cut" and i == 2:
                    await asyncio.sleep(0.05)
                    raise ConnectionError("scripted cut")  # drops the connection
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                              "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'logprobs': None, 'finish_reason': 'stop'}]})}\n\n".encode()  # noqa: E501
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = usage_of(model)
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "Incorrect API key provided")
        body = await request.json()
        script.record(body["model"], dict(request.headers), body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return JSONResponse({"object": "list", "model": body["model"],
                             "data": [{"object": "embedding", "index": i,
                                       "embedding": [0.1 * (i + 1), 0.2, 0.3]}
                                      for i, _ in enumerate(inputs)],
                             "usage": {"prompt_tokens": 4, "total_tokens": 4}})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": "ok", "object": "model", "created": 0, "owned_by": "fake"}]})

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/openai/deployments/{deployment}/chat/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ])
