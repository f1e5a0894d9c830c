"""A loopback stand-in for Anthropic's and OpenAI's APIs that keeps every request.

It is the ground truth for what the real agents send: each request's method,
path (with its query), headers and JSON body are kept in order in a
`Recording`, and it answers just enough, in each API's own streaming wire
format, for an agent to finish one turn. It checks nothing (any key, any
model), because a recorder that refused a request would hide what the agent
sends next.

- `POST /v1/messages` (any query, e.g. Claude Code's `?beta=true`): a Messages
  answer with one text block, as JSON or as the SSE events Anthropic streams.
- `POST /v1/messages/count_tokens`: a token count.
- `POST /v1/responses`: a Responses answer with one message item, as JSON or
  as the typed SSE events OpenAI streams.
- `HEAD`/`GET /` (Claude Code's connectivity check) answers 200; any other
  path answers 404 in Anthropic's error shape, and is still recorded.

`tests/agents/test_recorder.py` drives it with the official SDKs, so its
answers parse as the real APIs' do.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import serving

# What the recorder says, so a test can find it in an agent's output.
ANSWER = "The recorder says hello."
# Small, distinct numbers, so a test can tell which usage field went where.
MESSAGES_USAGE: dict[str, int] = {"input_tokens": 21, "output_tokens": 5,
                                  "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 0}
RESPONSES_USAGE: dict[str, Any] = {
    "input_tokens": 31, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 38}


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived. `body` is the parsed JSON, None for no body,
    or the raw text when it was not JSON."""

    method: str
    path: str  # with the query string, as the client sent it
    headers: dict[str, str]
    body: Any

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "headers": self.headers,
                "body": self.body}


@dataclass
class Recording:
    """Every request the recorder saw, in arrival order (the ASGI server runs
    handlers on one loop, but tests read from another thread, hence the lock)."""

    requests: list[Recorded] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, entry: Recorded) -> None:
        with self._lock:
            self.requests.append(entry)

    def snapshot(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def calls(self) -> list[str]:
        """`METHOD path` for each request, in order: what an agent's traffic looks like."""
        return [f"{r.method} {r.path}" for r in self.snapshot()]

    def find(self, method: str, path: str) -> list[Recorded]:
        """The requests to one route, whatever their query string."""
        return [r for r in self.snapshot()
                if r.method == method and r.path.split("?")[0] == path]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()


def sse(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event; both APIs name the event and repeat it as `type`."""
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


def message(model: str, text: str = ANSWER) -> dict[str, Any]:
    """A whole Messages answer with one text block."""
    return {"id": "msg_recorder", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": dict(MESSAGES_USAGE)}


def message_events(model: str, text: str = ANSWER) -> list[bytes]:
    """A Messages answer as Anthropic streams it: the message with no content and
    the input usage, then the block opened, its text in pieces and closed, then
    the stop reason with the output usage, then the end."""
    whole = message(model, text)
    start = {**whole, "content": [], "stop_reason": None,
             "usage": {**MESSAGES_USAGE, "output_tokens": 1}}
    pieces = _pieces(text)
    return [
        sse("message_start", {"message": start}),
        sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        sse("ping", {}),
        *(sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}})
          for p in pieces),
        sse("content_block_stop", {"index": 0}),
        sse("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                              "usage": {"output_tokens": MESSAGES_USAGE["output_tokens"]}}),
        sse("message_stop", {}),
    ]


def response(body: dict[str, Any], text: str | None = ANSWER,
             status: str = "completed") -> dict[str, Any]:
    """A Responses object for `body`: echoing what the request set, as OpenAI does,
    with one assistant message holding `text` (None: no output yet, no usage)."""
    output = [] if text is None else [_output_message(text, "completed")]
    return {
        "id": "resp_recorder", "object": "response", "created_at": int(time.time()),
        "status": status, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": None,
        "model": body.get("model", "unknown"), "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", True), "temperature": 1.0,
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": [], "top_p": 1.0,
        "truncation": "disabled", "usage": None if text is None else dict(RESPONSES_USAGE),
        "user": None, "metadata": {},
    }


def response_events(body: dict[str, Any], text: str = ANSWER) -> list[bytes]:
    """A Responses answer as OpenAI streams it: the response created and in
    progress, the message item added, its one output_text part added, the text
    in deltas, then each of those done in reverse, then the response completed
    with its usage. Every event carries the next `sequence_number`."""
    item_id = "msg_recorder"
    pending = response(body, text=None, status="in_progress")
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    steps: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
        ("response.output_item.added", {"output_index": 0,
                                        "item": _output_message("", "in_progress")}),
        ("response.content_part.added", {**where, "part": part}),
        *(("response.output_text.delta", {**where, "delta": p, "logprobs": []})
          for p in _pieces(text)),
        ("response.output_text.done", {**where, "text": text, "logprobs": []}),
        ("response.content_part.done", {**where, "part": {**part, "text": text}}),
        ("response.output_item.done", {"output_index": 0,
                                       "item": _output_message(text, "completed")}),
        ("response.completed", {"response": response(body, text)}),
    ]
    return [sse(kind, {**data, "sequence_number": n}) for n, (kind, data) in enumerate(steps)]


def _output_message(text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] \
        if text else []
    return {"id": "msg_recorder", "type": "message", "status": status, "role": "assistant",
            "content": content}


def _pieces(text: str) -> list[str]:
    """The text in word-sized deltas, as a model streams it."""
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])]


def app(recording: Recording) -> Starlette:
    """The recorder as an ASGI app; serve it with `tests.fakes.serving`."""

    async def keep(request: Request) -> Any:
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        recording.add(Recorded(request.method, path, dict(request.headers), body))
        return body

    async def messages(request: Request) -> Response:
        body = await keep(request)
        model = str((body or {}).get("model", "unknown"))
        if not (body or {}).get("stream"):
            return JSONResponse(message(model), headers={"request-id": "req_recorder"})
        return _stream(message_events(model), {"request-id": "req_recorder"})

    async def count_tokens(request: Request) -> Response:
        await keep(request)
        return JSONResponse({"input_tokens": MESSAGES_USAGE["input_tokens"]})

    async def responses(request: Request) -> Response:
        body = await keep(request) or {}
        if not body.get("stream"):
            return JSONResponse(response(body), headers={"x-request-id": "req_recorder"})
        return _stream(response_events(body), {"x-request-id": "req_recorder"})

    async def root(request: Request) -> Response:
        await keep(request)
        return Response(b"" if request.method == "HEAD" else b"recorder", 200,
                        media_type="text/plain")

    async def other(request: Request) -> Response:
        await keep(request)
        return JSONResponse({"type": "error", "error": {
            "type": "not_found_error", "message": f"the recorder has no {request.url.path}"}},
            404)

    every = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/{path:path}", other, methods=every),
    ])


@contextlib.contextmanager
def recording(port: int | None = None) -> Iterator[tuple[str, Recording]]:
    """A recorder on 127.0.0.1 (an ephemeral port unless given): its base URL
    (no /v1) and what it records."""
    kept = Recording()
    with serving(app(kept), port) as url:
        yield url, kept


def _stream(events: list[bytes], headers: dict[str, str]) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for event in events:
            yield event
    return StreamingResponse(chunks(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", **headers})
