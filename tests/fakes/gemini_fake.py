"""A fake of the Gemini API: generateContent, streamGenerateContent (SSE), embeddings.

It answers with a `functionCall` part when the request declares functions and
the last turn is not a function response; otherwise with text naming the model.
Besides the models `Script` knows: `too-long` answers Gemini's 400 for an
input over the model's tokens; `blocked` a 200 whose prompt was blocked
(`promptFeedback.blockReason`, no candidates); `exhausted` a 429 whose
`RetryInfo` says when to come back; `cut-after-finish` streams the whole
answer, finish reason and usage included, then drops the connection;
`bad-event` streams a malformed event after the first good one.
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

STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE"}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message,
                                   "status": STATUS_NAMES.get(status, "UNKNOWN")}}, status,
                        headers=headers)


def _parts(body: dict[str, Any], model: str) -> list[dict[str, Any]]:
    last = body["contents"][-1]["parts"]
    answered = any("functionResponse" in p for p in last)
    declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations", [])]
    if declarations and not answered:
        return [{"functionCall": {"name": declarations[0]["name"], "args": {"city": "Paris"}}}]
    return [{"text": f"hello from {model}"}]


def app(script: Script) -> Starlette:
    async def generate(request: Request) -> Response:
        if request.headers.get("x-goog-api-key", request.query_params.get("key")) != API_KEY:
            return _error(401, "API key not valid. Please pass a valid API key.")
        model, _, method = request.path_params["target"].partition(":")
        body = await request.json()
        if not body.get("contents"):
            return _error(400, "* GenerateContentRequest.contents: contents is not specified")
        call = script.record(model, dict(request.headers), body)
        failure = await script.failure(model, call)
        if failure:
            return _error(failure[0], f"scripted {failure[0]}", failure[1])
        if model == "too-long":
            return _error(400, "The input token count (1200000) exceeds the maximum number of "
                               "tokens allowed (1048576).")
        if model == "exhausted":
            return JSONResponse({"error": {
                "code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED", "details": [{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": "7s"}]}}, 429)
        if model == "blocked":
            blocked = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]},
                "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
                "modelVersion": model, "responseId": "resp_blocked"}
            if method == "generateContent":
                return JSONResponse(blocked)

            async def refusal() -> AsyncIterator[bytes]:
                yield f"data: {json.dumps(blocked)}\r\n\r\n".encode()
            return StreamingResponse(refusal(), media_type="text/event-stream")
        parts = _parts(body, model)
        usage = {"promptTokenCount": 8, "candidatesTokenCount": 4, "totalTokenCount": 12}
        answer = {"candidates": [{"content": {"role": "model", "parts": parts},
                                  "finishReason": "STOP", "index": 0}],
                  "usageMetadata": usage, "modelVersion": model, "responseId": "resp_fake"}
        if method == "generateContent":
            return JSONResponse(answer)
        if method != "streamGenerateContent":
            return _error(404, f"unknown method {method}")

        async def events() -> AsyncIterator[bytes]:
            if "text" not in parts[0]:
                yield f"data: {json.dumps(answer)}\r\n\r\n".encode()
                return
            words = parts[0]["text"].split()
            for i, word in enumerate(words):
                if model == "cut" and i == 1:
                    await asyncio.sleep(0.05)
                    raise ConnectionError("scripted cut")
                last = i == len(words) - 1
                piece: dict[str, Any] = {"candidates": [{
                    "content": {"role": "model", "parts": [{"text": word if i == 0
                                                            else " " + word}]}, "index": 0,
                    **({"finishReason": "STOP"} if last else {})}],
                    "modelVersion": model, "responseId": "resp_fake"}
                if last:
                    piece["usageMetadata"] = usage
                yield f"data: {json.dumps(piece)}\r\n\r\n".encode()
                if model == "bad-event" and i == 0:
                    yield b'data: {"candidates": [{"content": {"role": "mod\r\n\r\n'
            if model == "cut-after-finish":
                await asyncio.sleep(0.05)
                raise ConnectionError("scripted cut after the finish")
        return StreamingResponse(events(), media_type="text/event-stream")

    async def embed(request: Request) -> Response:
        model, _, _ = request.path_params["target"].partition(":")
        body = await request.json()
        script.record(model, dict(request.headers), body)
        return JSONResponse({"embeddings": [{"values": [0.5, 0.25, float(i)]}
                                            for i, _ in enumerate(body["requests"])]})

    async def route(request: Request) -> Response:
        if request.path_params["target"].endswith(":batchEmbedContents"):
            return await embed(request)
        return await generate(request)

    return Starlette(routes=[Route("/v1/models/{target:path}", route, methods=["POST"]),
                             Route("/v1beta/models/{target:path}", route, methods=["POST"])])
