"""A fault-injecting fake of OpenAI's chat completions API, for the fault suite.

It is a small HTTP/1.1 server of its own (keep-alive, chunked streams) rather
than an ASGI app, since the faults need what an ASGI server does not give: a
connection reset before any header, an answer that never comes, a stream cut
in the middle of its body. Behaviour is scripted by the model name a request
asks for, like `Script` in `tests.fakes`:

- any other model: answers "hello from MODEL"; a stream word by word, then
  the finish chunk, the usage chunk if asked for, `[DONE]`;
- `429-retry-after`: 429 with `Retry-After: {retry_after}` on its first call,
  then answers; `429-retry-after-date` the same with an HTTP date;
- `429`: 429 without Retry-After, on every call;
- `500-once`: 500 on its first call, then answers; `503`: 503 on every call;
- `reset`: resets the connection (RST) before any header;
- `silent`: reads the request and never answers; ends when the client hangs
  up (noted in `abandoned`) or after `hold` seconds;
- `late`: the first SSE event (for a plain call, the answer) comes after
  `first_token_delay` seconds;
- `stall`: a stream stalls after `stall_after` chunks, a plain answer half-way
  through its body, until the client hangs up (noted in `abandoned`);
- `bad-chunk`: a stream with a malformed chunk after the first good one,
  which then carries on;
- `no-done`: a stream that ends after its finish and usage chunks, without
  `[DONE]`;
- `too-long`: 400 `context_length_exceeded` in OpenAI's error shape;
- `filtered`: 400 `content_filter` in Azure's shape, with
  `innererror.content_filter_result`;
- `leak-key`: 401 whose message echoes the caller's key in full;
- `junk-text`, `junk-truncated`, `junk-array`, `junk-object`: 200 with a body
  that is not JSON, is cut short, is a JSON array, is an object without
  `choices`; `junk-sse`: a 200 stream without one valid event;
- `resume-cut`: streams `resume_text()` ("w1 w2 ... w60") and cuts the
  connection after word `resume_cut_at` (40);
- `resume-continue`: given a final assistant message that is a prefix of
  `resume_text()` and `continue_final_message: true, add_generation_prompt:
  false` (vLLM's extension fields), streams the rest from where the prefix
  ends; without them, the whole text;
- `resume-refuse`: 400 to a final assistant message or to those fields;
  else the whole text.

A policy's model name cannot start with a digit, so each status fault also
answers to its name with `status-` in front (`status-429-retry-after`,
`status-503`). While `raw` is set, every POST, to any path, is answered with exactly those
bytes (status line and headers included), and the connection closed: the way
to put arbitrary junk on the wire.

`resume-cut` continues a prefix as `resume-continue` does, so a stream cut
there can be resumed on the same model. `take_down(model)` makes a model
(or, without one, the whole server) answer 503 until `bring_back`; `GET
/v1/models` and `GET /v1/models/{id}` follow the switch. Every chat call is
recorded in `calls` with its time (`time.monotonic()`, when its body was in),
its body and whether it streamed. A wrong key gets OpenAI's 401, which echoes
the key masked. Delays are small and settable, so the fault suite stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fakes import API_KEY

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
MODELS = ("ok", "429-retry-after", "429-retry-after-date", "429", "500-once", "503", "reset",
          "silent", "late", "stall", "bad-chunk", "no-done", "too-long", "filtered", "leak-key",
          "junk-text", "junk-truncated", "junk-array", "junk-object", "junk-sse", "resume-cut",
          "resume-continue", "resume-refuse")
CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}


def resume_text(words: int = 60) -> str:
    return " ".join(f"w{i}" for i in range(1, words + 1))


@dataclass
class Call:
    model: str
    at: float  # time.monotonic() once the body was read
    body: dict[str, Any]
    stream: bool
    headers: dict[str, str]
    path: str = "/v1/chat/completions"


@dataclass(frozen=True)
class Reply:
    """A scripted answer: `raw` bytes on the wire after `delay` seconds, then the
    connection closed (`"close"`: a FIN, so a body without a length ends there),
    reset (`"reset"`: an RST) or held open until the client hangs up (`"stall"`)."""

    raw: bytes
    then: str = "close"
    delay: float = 0.0


def json_reply(status: int, content: Any, headers: dict[str, str] | None = None,
               then: str = "close", delay: float = 0.0) -> Reply:
    """A JSON answer (`content` as bytes is sent as it is, JSON or not)."""
    raw = content if isinstance(content, bytes) else orjson.dumps(content)
    head = {"content-type": "application/json", "content-length": str(len(raw)),
            "connection": "close", **(headers or {})}
    return Reply(_head(status, head) + raw, then, delay)


def sse_reply(*events: bytes | dict[str, Any], then: str = "close", delay: float = 0.0
              ) -> Reply:
    """A stream of server-sent events without a length, ended by what `then` does. An
    object is framed as Anthropic and the Responses API frame theirs (its `type` as the
    event's name); bytes go as they are, so a test can send chat's `data:` lines or junk."""
    body = b"".join(
        event if isinstance(event, bytes) else
        b"event: " + str(event.get("type")).encode() + b"\ndata: " + orjson.dumps(event) +
        b"\n\n" for event in events)
    head = {"content-type": "text/event-stream", "cache-control": "no-cache",
            "connection": "close"}
    return Reply(_head(200, head) + body, then, delay)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
             *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


PATH_MODEL = re.compile(r"/models/([^/:?]+):|/deployments/([^/?]+)/")


@dataclass
class Faults:
    """The fake's settings, its down/back switch, and what it saw."""

    retry_after: float = 1.0
    first_token_delay: float = 0.5
    stall_after: int = 2
    chunk_delay: float = 0.0  # between the events of an ordinary stream
    hold: float = 30.0  # the longest a silent or stalled answer waits for its client to leave
    resume_words: int = 60
    resume_cut_at: int = 40
    raw: bytes | None = None
    replies: dict[str, Reply | list[Reply]] = field(default_factory=dict)
    all_down: bool = False
    down: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)  # models whose client hung up on them
    health_checks: list[float] = field(default_factory=list)

    def take_down(self, model: str | None = None) -> None:
        if model is None:
            self.all_down = True
        else:
            self.down.add(model)

    def bring_back(self, model: str | None = None) -> None:
        if model is None:
            self.all_down = False
            self.down.clear()
        else:
            self.down.discard(model)

    def is_down(self, model: str) -> bool:
        return self.all_down or model in self.down

    def calls_to(self, model: str) -> list[Call]:
        return [c for c in self.calls if c.model == model]

    def reply(self, model: str) -> Reply | None:
        """The scripted reply to the next call of `model`, if it has one."""
        found = self.replies.get(model)
        if isinstance(found, list):
            return found[min(len(self.calls_to(model)) - 1, len(found) - 1)] if found else None
        return found


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Connection:
    """One client connection: requests read in turn, answers written by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self) -> Request | None:
        line = await self.reader.readline()
        if not line.strip():
            return None
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length") or 0)
        body = await self.reader.readexactly(size) if size else b""
        return Request(method, path, headers, body)

    async def head(self, status: int, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
                 *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        self.writer.write("\r\n".join(lines).encode("latin-1"))
        await self.writer.drain()

    async def json(self, status: int, content: Any, headers: dict[str, str] | None = None
                   ) -> None:
        raw = content if isinstance(content, bytes) else orjson.dumps(content)
        await self.head(status, {"content-type": "application/json",
                                 "content-length": str(len(raw)), **(headers or {})})
        self.writer.write(raw)
        await self.writer.drain()

    async def start_stream(self) -> None:
        await self.head(200, {"content-type": "text/event-stream", "cache-control": "no-cache",
                              "transfer-encoding": "chunked"})

    async def send(self, raw: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(raw), raw))
        await self.writer.drain()

    async def event(self, data: Any) -> None:
        await self.send(b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data))
                        + b"\n\n")

    async def end_stream(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def reset(self) -> None:
        """A TCP reset: no FIN, no answer."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def cut(self) -> None:
        """The connection closed in the middle of an answer."""
        self.writer.transport.abort()

    async def until_hangup(self, hold: float) -> bool:
        """Wait for the client to close the connection: whether it did within `hold`."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(hold):
                while await self.reader.read(65536):
                    pass
                return True
        return False


def _error(message: str, kind: str | None, code: str | None = None,
           param: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code, **extra}}


AZURE_FILTER = _error(
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
    None, "content_filter", "prompt", status=400, innererror={
        "code": "ResponsibleAIPolicyViolation", "content_filter_result": {
            "hate": {"filtered": False, "severity": "safe"},
            "jailbreak": {"filtered": False, "detected": False},
            "self_harm": {"filtered": False, "severity": "safe"},
            "sexual": {"filtered": False, "severity": "safe"},
            "violence": {"filtered": True, "severity": "medium"}}})
TOO_LONG = _error(
    "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    "200512 tokens. Please reduce the length of the messages.", "invalid_request_error",
    "context_length_exceeded", "messages")


class Fake:
    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.tasks: set[asyncio.Task[Any]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        connection = Connection(reader, writer)
        try:
            while (request := await connection.request()) is not None:
                if not await self.answer(connection, request):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the fake is stopping; a task that ends cancelled upsets asyncio's streams
        finally:
            self.tasks.discard(task)
            writer.close()

    async def answer(self, connection: Connection, request: Request) -> bool:
        """Answer one request; whether the connection can take another."""
        if request.method == "POST" and self.faults.raw is not None:
            connection.writer.write(self.faults.raw)
            await connection.writer.drain()
            return False
        if request.method == "POST" and self.faults.replies and \
                await self.scripted(connection, request):
            return False
        if request.method == "GET" and request.path.startswith("/v1/models"):
            await self.models(connection, request.path.removeprefix("/v1/models").strip("/"))
            return True
        if request.method != "POST" or request.path != "/v1/chat/completions":
            await connection.json(404, _error(f"unknown route {request.path}",
                                              "invalid_request_error"))
            return True
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        if key != API_KEY:
            masked = key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 8 else key
            await connection.json(401, _error(
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.", "invalid_request_error",
                "invalid_api_key"))
            return True
        try:
            body = orjson.loads(request.body)
            model = str(body["model"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await connection.json(400, _error("We could not parse the JSON body of your "
                                              "request.", "invalid_request_error"))
            return True
        stream = body.get("stream") is True
        self.faults.calls.append(Call(model, time.monotonic(), body, stream, request.headers))
        return await self.chat(connection, model, body, stream, key)

    async def scripted(self, connection: Connection, request: Request) -> bool:
        """Answer a call to a model `replies` names; whether it was one."""
        try:
            body = orjson.loads(request.body) if request.body else {}
        except orjson.JSONDecodeError:
            body = {}
        named = PATH_MODEL.search(request.path)
        model = body.get("model") if isinstance(body, dict) else None
        if named:
            model = named.group(1) or named.group(2)
        if not isinstance(model, str) or model not in self.faults.replies:
            return False
        body = body if isinstance(body, dict) else {}
        streamed = body.get("stream") is True or "stream" in request.path
        self.faults.calls.append(Call(model, time.monotonic(), body, streamed, request.headers,
                                      request.path))
        reply = self.faults.reply(model)
        assert reply is not None
        if reply.delay:
            await asyncio.sleep(reply.delay)
        connection.writer.write(reply.raw)
        await connection.writer.drain()
        if reply.then == "reset":
            connection.reset()
        elif reply.then == "stall" and await connection.until_hangup(self.faults.hold):
            self.faults.abandoned.append(model)
        return True

    async def models(self, connection: Connection, model: str) -> None:
        faults = self.faults
        faults.health_checks.append(time.monotonic())
        if faults.all_down or (model and faults.is_down(model)):
            await connection.json(503, _error("The server is temporarily unavailable.",
                                              "server_error"))
            return
        entry = {"object": "model", "created": 0, "owned_by": "faults"}
        if model:
            await connection.json(200, {"id": model, **entry})
            return
        await connection.json(200, {"object": "list", "data": [
            {"id": name, **entry} for name in MODELS if not faults.is_down(name)]})

    async def chat(self, connection: Connection, model: str, body: dict[str, Any],
                   stream: bool, key: str) -> bool:
        faults = self.faults
        call = len(faults.calls_to(model))
        fault = model.removeprefix("status-")  # a policy's model name cannot start with a digit
        if faults.is_down(model) or fault == "503":
            await connection.json(503, _error("The server is overloaded or not ready yet.",
                                              "server_error"))
            return True
        if fault in ("429-retry-after", "429-retry-after-date") and call == 1:
            when = f"{faults.retry_after:g}" if fault == "429-retry-after" else \
                email.utils.formatdate(time.time() + faults.retry_after, usegmt=True)
            await connection.json(429, _error("Rate limit reached for requests",
                                              "requests", "rate_limit_exceeded"),
                                  {"retry-after": when})
            return True
        if fault == "429":
            await connection.json(429, _error("You exceeded your current quota.",
                                              "insufficient_quota", "insufficient_quota"))
            return True
        if fault == "500-once" and call == 1:
            await connection.json(500, _error("The server had an error while processing your "
                                              "request.", "server_error"))
            return True
        if model == "reset":
            connection.reset()
            return False
        if model == "silent":
            if await connection.until_hangup(faults.hold):
                faults.abandoned.append(model)
            return False
        if model == "too-long":
            await connection.json(400, TOO_LONG)
            return True
        if model == "filtered":
            await connection.json(400, AZURE_FILTER)
            return True
        if model == "leak-key":
            await connection.json(401, _error(f"Incorrect API key provided: {key}.",
                                              "invalid_request_error", "invalid_api_key"))
            return True
        if model.startswith("junk-") and model != "junk-sse":
            await connection.json(200, {
                "junk-text": b"<html><body>502 Bad Gateway</body></html>",
                "junk-truncated": b'{"id": "chatcmpl-fault", "object": "chat.completion", "cho',
                "junk-array": b'[{"id": "chatcmpl-fault"}]',
                "junk-object": b'{"id": "chatcmpl-fault", "object": "chat.completion"}',
            }.get(model, b"junk"))
            return True
        if model.startswith("resume-"):
            return await self.resume(connection, model, body, stream)
        text = f"hello from {model}"
        if not stream:
            return await self.plain(connection, model, text)
        return await self.stream(connection, model, body, _pieces(text))

    async def plain(self, connection: Connection, model: str, text: str) -> bool:
        faults = self.faults
        answer = orjson.dumps(_completion(model, text))
        if model == "late":
            await asyncio.sleep(faults.first_token_delay)
        if model == "stall":
            await connection.head(200, {"content-type": "application/json",
                                        "content-length": str(len(answer))})
            connection.writer.write(answer[:len(answer) // 2])
            await connection.writer.drain()
            if await connection.until_hangup(faults.hold):
                faults.abandoned.append(model)
            return False
        await connection.json(200, answer)
        return True

    async def stream(self, connection: Connection, model: str, body: dict[str, Any],
                     pieces: list[str], cut_after: int | None = None) -> bool:
        """An ordinary stream, with the faults the model asks for; `cut_after` pieces of
        text, the connection is dropped."""
        faults = self.faults
        await connection.start_stream()
        if model == "junk-sse":
            for raw in (b": a comment is not an event\n\n", b"this is not a field\n\n",
                        b"data: not json\n\n", b"data: \xff\xfe{\n\n", b"event: ping\n\n"):
                await connection.send(raw)
            await connection.end_stream()
            return True
        if model == "late":
            await asyncio.sleep(faults.first_token_delay)
        events = [_chunk(model, {"role": "assistant", "content": ""})] + \
            [_chunk(model, {"content": piece}) for piece in pieces]
        for i, event in enumerate(events):
            if model == "stall" and i == faults.stall_after:
                if await connection.until_hangup(faults.hold):
                    faults.abandoned.append(model)
                return False
            if cut_after is not None and i - 1 == cut_after:
                connection.cut()
                return False
            await connection.event(event)
            if model == "bad-chunk" and i == 0:
                await connection.event(b'{"id": "chatcmpl-fault", "choices": [{"delta": {"con')
            if faults.chunk_delay:
                await asyncio.sleep(faults.chunk_delay)
        await connection.event(_chunk(model, {}, "stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            words = sum(len(p.split()) for p in pieces)
            await connection.event({**_chunk(model, {}), "choices": [], "usage": _usage(words)})
        if model != "no-done":
            await connection.event(b"[DONE]")
        await connection.end_stream()
        return True

    async def resume(self, connection: Connection, model: str, body: dict[str, Any],
                     stream: bool) -> bool:
        faults = self.faults
        full = resume_text(faults.resume_words)
        messages = body.get("messages") or []
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        prefilled = last.get("role") == "assistant"
        extension = {k: body[k] for k in CONTINUE if k in body}
        if model == "resume-refuse" and (prefilled or extension):
            message = ("Unrecognized request arguments supplied: " + ", ".join(sorted(extension))
                       if extension else "The last message must be from the user or a tool.")
            await connection.json(400, _error(message, "invalid_request_error"))
            return True
        start = 0
        if prefilled and extension == CONTINUE:
            prefix = last.get("content")
            if not isinstance(prefix, str) or not full.startswith(prefix):
                await connection.json(400, _error(
                    "The final assistant message is not a prefix of this model's answer.",
                    "invalid_request_error", param="messages"))
                return True
            start = len(prefix)
        rest = full[start:]
        if not stream:
            return await self.plain(connection, model, rest)
        pieces = _pieces(rest)
        cut_after = None
        if model == "resume-cut":  # after word `resume_cut_at` of the whole text
            done = len(full[:start].split())
            if done < faults.resume_cut_at:
                cut_after = faults.resume_cut_at - done
        return await self.stream(connection, model, body, pieces, cut_after)


def _pieces(text: str) -> list[str]:
    """Text as a model streams it: each word with the space before it."""
    return re.findall(r"\s*\S+\s*$|\s*\S+", text) or ([text] if text else [])


def _usage(words: int) -> dict[str, int]:
    return {"prompt_tokens": 9, "completion_tokens": words, "total_tokens": 9 + words}


def _completion(model: str, text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_fault",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(len(text.split()))}


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-fault", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_fault",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}]}


@contextlib.contextmanager
def serving_faults(faults: Faults | None = None) -> Iterator[tuple[str, Faults]]:
    """Run the fake on 127.0.0.1 in a thread of its own; yields its base URL (without
    `/v1`) and its `Faults`."""
    faults = faults or Faults()
    fake = Fake(faults)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
        box.update(port=server.sockets[0].getsockname()[1], stop=stop,
                   loop=asyncio.get_running_loop())
        ready.set()
        await stop.wait()
        server.close()
        for task in list(fake.tasks):
            task.cancel()
        await asyncio.gather(*fake.tasks, return_exceptions=True)
        await server.wait_closed()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the fault fake did not start")
    try:
        yield f"http://127.0.0.1:{box['port']}", faults
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)

