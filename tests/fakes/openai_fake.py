"""A fake of OpenAI's API: chat completions and responses (plain and streamed),
embeddings, models.

Usage is 9 prompt and 3 completion tokens, except for the model `cached`,
whose usage has the details OpenAI sends for a prompt cache hit and a
reasoning model (`CACHED_USAGE`): the cached tokens are part of
`prompt_tokens`, the reasoning tokens part of `completion_tokens`.

`POST /v1/responses` speaks the Responses API: it calls the first function
tool offered (with `{"city": "Paris"}`) unless the input ends with a
function call's output, and otherwise answers text naming the model, as a
message item or as the typed stream events. It keeps the ids of the
responses it stored (not `store: false`) and refuses a
`previous_response_id` it does not know, as OpenAI does. Besides the models
`Script` knows, `cached` answers a reasoning item first (with
`encrypted_content` when `include` asks for it), `incomplete` stops at
`max_output_tokens`, and `failed` streams `response.failed` after it began
(a 500 when not streamed).
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


def responses_usage(model: str) -> dict[str, Any]:
    """`usage_of(model)` as the Responses API counts it."""
    chat = usage_of(model)
    return {"input_tokens": chat["prompt_tokens"],
            "input_tokens_details": {
                "cached_tokens": chat.get("prompt_tokens_details", {}).get("cached_tokens", 0),
                "cache_write_tokens": 0},
            "output_tokens": chat["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": chat.get(
                "completion_tokens_details", {}).get("reasoning_tokens", 0)},
            "total_tokens": chat["total_tokens"]}


def _first_function(tools: Any) -> tuple[str, str | None] | None:
    """The name (and namespace) of the first function a request offers."""
    for tool in tools if isinstance(tools, list) else ():
        if tool.get("type") == "function":
            return tool["name"], None
        if tool.get("type") == "namespace":
            for member in tool.get("tools", []):
                if member.get("type") == "function":
                    return member["name"], tool["name"]
    return None


def _unreadable_input(given: Any) -> str:
    """OpenAI's 400 for an input item whose content is neither text nor parts, or ""."""
    for index, item in enumerate(given if isinstance(given, list) else ()):
        content = item.get("content") if isinstance(item, dict) else None
        if content is not None and not isinstance(content, str | list):
            kind = {bool: "a boolean", int: "an integer", float: "a decimal",
                    dict: "an object"}.get(type(content), "another type")
            return (f"Invalid type for 'input[{index}].content': expected one of a string "
                    f"or array of input items, but got {kind} instead.")
    return ""


def _output(body: dict[str, Any], model: str, number: int, status: str) -> list[dict[str, Any]]:
    """The output items the fake answers `body` with."""
    given = body.get("input")
    last = given[-1] if isinstance(given, list) and given else {}
    function = _first_function(body.get("tools"))
    output: list[dict[str, Any]] = []
    if model == "cached":
        reasoning: dict[str, Any] = {"id": f"rs_fake{number}", "type": "reasoning",
                                     "summary": []}
        if "reasoning.encrypted_content" in (body.get("include") or []):
            reasoning["encrypted_content"] = "gAAAAfake"
        output.append(reasoning)
    if function and last.get("type") != "function_call_output":
        call: dict[str, Any] = {"id": f"fc_fake{number}", "type": "function_call",
                                "status": "completed", "call_id": f"call_fake{number}",
                                "name": function[0], "arguments": '{"city": "Paris"}'}
        if function[1]:
            call["namespace"] = function[1]
        return [*output, call]
    said = Script.said(model, given if isinstance(given, str) else last.get("content"))
    return [*output, {"id": f"msg_fake{number}", "type": "message", "role": "assistant",
                      "status": status, "content": [{"type": "output_text",
                                                     "text": said,
                                                     "annotations": [], "logprobs": []}]}]


def _response(body: dict[str, Any], model: str, response_id: str, status: str,
              output: list[dict[str, Any]]) -> dict[str, Any]:
    """A Response object, the request's settings echoed as OpenAI echoes them."""
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()),
        "status": status, "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete"
        else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "model": model, "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": "default", "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
        "usage": responses_usage(model) if status != "in_progress" else None,
        "user": body.get("user"), "metadata": body.get("metadata") or {}}


def app(script: Script) -> Starlette:
    stored: set[str] = set()  # the ids of the responses kept for a previous_response_id
    made = [0]
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
        text = Script.said(model, (body.get("messages") or [{}])[-1].get("content"))
        created = int(time.time())
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": created,
                "model": model, "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                     "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage_of(model)},
                # as api.openai.com's CDN does: a cookie no gateway should pass on
                headers={"set-cookie": "__cf_bm=fake-cdn-cookie; path=/; HttpOnly"})

        async def events() -> AsyncIterator[bytes]:
            base: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                                    "created": created, "model": model,
                                    "system_fingerprint": "fp_fake"}
            pieces = [{"role": "assistant", "content": ""}] + \
                [{"content": piece} for piece in Script.pieces(model, text)]
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
            if model != "echo-unclosed":
                yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'logprobs': None, 'finish_reason': 'stop'}]})}\n\n".encode()  # noqa: E501
            if (body.get("stream_options") or {}).get("include_usage") \
                    and model != "echo-unclosed":
                usage = usage_of(model)
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    async def responses(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "Incorrect API key provided")
        body = await request.json()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "Missing required parameter: 'model'.")
        unreadable = _unreadable_input(body.get("input"))
        if unreadable:
            return _error(400, unreadable)
        previous = body.get("previous_response_id")
        if previous is not None and previous not in stored:
            return _error(400, f"Previous response with id '{previous}' not found.")
        call = script.record(model, dict(request.headers), body)
        if model == "hang" and not body.get("stream"):
            await script.hang(model, request.receive)
            return _error(500, "the caller hung up")
        failure = await script.failure(model, call)
        if failure:
            return _error(failure[0], f"scripted {failure[0]}", failure[1])
        if model == "failed" and not body.get("stream"):
            return _error(500, "scripted failure")
        made[0] += 1
        number = made[0]
        response_id = f"resp_fake{number}"
        status = "incomplete" if model == "incomplete" else "completed"
        output = _output(body, model, number, status)
        if body.get("store", True) is not False:
            stored.add(response_id)
        if not body.get("stream"):
            return JSONResponse(_response(body, model, response_id, status, output))

        async def events() -> AsyncIterator[bytes]:
            sequence = iter(range(1_000))

            def event(kind: str, **data: Any) -> bytes:
                payload = {"type": kind, "sequence_number": next(sequence), **data}
                return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()
            start = _response(body, model, response_id, "in_progress", [])
            yield event("response.created", response=start)
            yield event("response.in_progress", response=start)
            if model == "hang":  # the start out, then wait for a hang-up
                await script.hang(model + "-stream", request.receive)
                return
            if model == "failed":
                yield event("response.failed", response={
                    **start, "status": "failed",
                    "error": {"code": "server_error", "message": "scripted failure"}})
                return
            for index, item in enumerate(output):
                if item["type"] == "message":
                    yield event("response.output_item.added", output_index=index, item={
                        **item, "status": "in_progress", "content": []})
                    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
                    yield event("response.content_part.added", **where, part={
                        "type": "output_text", "text": "", "annotations": [], "logprobs": []})
                    for i, piece in enumerate(Script.pieces(model,
                                                            item["content"][0]["text"])):
                        if model == "cut" and i == 2:
                            await asyncio.sleep(0.05)
                            raise ConnectionError("scripted cut")  # drops the connection
                        yield event("response.output_text.delta", **where, delta=piece,
                                    logprobs=[])
                    yield event("response.output_text.done", **where,
                                text=item["content"][0]["text"], logprobs=[])
                    yield event("response.content_part.done", **where,
                                part=item["content"][0])
                elif item["type"] == "function_call":
                    yield event("response.output_item.added", output_index=index, item={
                        **item, "status": "in_progress", "arguments": ""})
                    where = {"item_id": item["id"], "output_index": index}
                    for piece in ('{"city": ', '"Paris"}'):
                        yield event("response.function_call_arguments.delta", **where,
                                    delta=piece)
                    yield event("response.function_call_arguments.done", **where,
                                arguments=item["arguments"])
                else:
                    yield event("response.output_item.added", output_index=index, item=item)
                yield event("response.output_item.done", output_index=index, item=item)
            yield event(f"response.{status}",
                        response=_response(body, model, response_id, status, output))
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
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ])
