"""Anthropic's Messages API, spoken on behalf of OpenAI-shaped requests.

System and developer messages become the top-level `system`; `max_tokens`,
which Anthropic requires, comes from the request or else the model's
`max_output`; tool definitions, tool calls and tool results are translated
both ways; stop reasons and usage are mapped; stream events become OpenAI
chunks. The key is sent as `x-api-key` and as `Authorization: Bearer`, since
both are seen in front of Anthropic-compatible endpoints.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson

from compiler.compiled import Model, Timeouts
from runtime.errors import UpstreamError
from runtime.providers import chat
from runtime.providers.base import Adapter, Body, Decoder, error_fields
from runtime.providers.wire import Malformed, count, invalid, lst, obj, opt_obj, text

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
          "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}
OVERLOADED = 529  # Anthropic's status for an overloaded API: a 5xx for retries
STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
          "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
          "api_error": 500, "overloaded_error": OVERLOADED}


def _blocks(content: object, where: str) -> list[Body]:
    """OpenAI content parts as Anthropic content blocks."""
    blocks: list[Body] = []
    for part in chat.parts(content, where):
        if part.url is None:
            blocks.append({"type": "text", "text": part.text})
            continue
        inline = chat.data_url(part.url)
        if inline:
            blocks.append({"type": "image", "source": {"type": "base64", "media_type": inline[0],
                                                       "data": inline[1]}})
        else:
            blocks.append({"type": "image", "source": {"type": "url", "url": part.url}})
    return blocks


def to_messages(body: Body, model: Model) -> Body:
    """An OpenAI chat request as an Anthropic Messages request (a 400 for what cannot be)."""
    system: list[str] = []
    messages: list[Body] = []

    def add(role: str, blocks: list[Body]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for role, message, where in chat.messages(body):
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(chat.text_of(content, f"{where}.content"))
        elif role == "tool":
            call = message.get("tool_call_id")
            if not isinstance(call, str):
                raise invalid(f"{where}.tool_call_id", "must be a string")
            add("user", [{"type": "tool_result", "tool_use_id": call,
                          "content": chat.text_of(content, f"{where}.content")}])
        elif role == "assistant":
            blocks = _blocks(content, f"{where}.content")
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                       for c in chat.tool_calls(message, where)]
            add("assistant", blocks)
        else:
            add("user", _blocks(content, f"{where}.content"))
    request: Body = {
        "model": model.upstream,
        "messages": messages,
        "max_tokens": chat.integer(body, "max_tokens") or
        chat.integer(body, "max_completion_tokens") or model.max_output or DEFAULT_MAX_TOKENS,
    }
    if system:
        request["system"] = "\n\n".join(system)
    temperature = chat.number(body, "temperature")
    if temperature is not None:
        request["temperature"] = min(temperature, 1.0)  # Anthropic's range
    top_p = chat.number(body, "top_p")
    if top_p is not None:
        request["top_p"] = top_p
    stop = chat.stop(body)
    if stop:
        request["stop_sequences"] = stop
    tools = chat.tools(body)
    if tools:
        request["tools"] = [{"name": t.name, "description": t.description,
                             "input_schema": t.parameters or {"type": "object",
                                                              "properties": {}}}
                            for t in tools]
    choice = chat.tool_choice(body)
    if choice == "required":
        request["tool_choice"] = {"type": "any"}
    elif choice in ("auto", "none"):
        request["tool_choice"] = {"type": choice}
    elif choice:
        request["tool_choice"] = {"type": "tool", "name": choice.removeprefix("function:")}
    user = chat.user(body)
    if user:
        request["metadata"] = {"user_id": user}
    return request


def _usage(usage: Body, where: str = "usage") -> Body:
    """Anthropic's usage in OpenAI's terms. Anthropic's `input_tokens` leaves out the
    cache's reads and writes, which it bills apart; OpenAI's `prompt_tokens` holds
    them, with the reads in `prompt_tokens_details.cached_tokens`, and the writes go
    beside them as `cache_write_tokens` (OpenRouter's name), so each is priced."""
    fresh = count(usage.get("input_tokens"), f"{where}.input_tokens")
    written = count(usage.get("cache_creation_input_tokens"),
                    f"{where}.cache_creation_input_tokens")
    read = count(usage.get("cache_read_input_tokens"), f"{where}.cache_read_input_tokens")
    completion = count(usage.get("output_tokens"), f"{where}.output_tokens")
    prompt = fresh + written + read
    out: Body = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
    if written or read:
        out["prompt_tokens_details"] = {"cached_tokens": read, "cache_write_tokens": written}
    return out


def from_message(data: Body, model: Model) -> Body:
    """An Anthropic message as an OpenAI chat completion (`Malformed` if it is not one)."""
    texts: list[str] = []
    calls: list[Body] = []
    for i, block in enumerate(lst(data.get("content"), "content")):
        where = f"content[{i}]"
        block = obj(block, where)
        kind = block.get("type")
        if kind == "text":
            texts.append(text(block.get("text"), f"{where}.text"))
        elif kind == "tool_use":
            calls.append({"id": text(block.get("id"), f"{where}.id"), "type": "function",
                          "function": {"name": text(block.get("name"), f"{where}.name"),
                                       "arguments": orjson.dumps(
                                           opt_obj(block.get("input"), f"{where}.input")
                                       ).decode()}})
        elif not isinstance(kind, str):
            raise Malformed(f"{where}.type is not a string")
    joined = "".join(texts)
    message: Body = {"role": "assistant", "content": joined or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    reason = text(data.get("stop_reason"), "stop_reason")
    return {
        "id": text(data.get("id"), "id"), "object": "chat.completion",
        "created": int(time.time()), "model": text(data.get("model"), "model", model.upstream),
        "choices": [{"index": 0, "message": message, "finish_reason": FINISH.get(reason, "stop")}],
        "usage": _usage(opt_obj(data.get("usage"), "usage")),
    }


class Events(Decoder):
    """Anthropic's stream events as OpenAI chunks; `message_stop` is the end marker."""

    def __init__(self, adapter: Adapter, model: Model) -> None:
        self.adapter = adapter
        self.base: Body = {"id": "", "object": "chat.completion.chunk",
                           "created": int(time.time()), "model": model.upstream}
        self.usage: Body = {}
        self.tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index

    def chunk(self, delta: Body, finish: str | None = None) -> Body:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def event(self, name: str, data: bytes) -> Body | None:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise Malformed(f"an event is not JSON ({exc})") from exc
        payload = obj(payload, "an event")
        kind = text(payload.get("type"), "an event's type", name)
        if kind == "message_start":
            message = obj(payload.get("message"), "message_start.message")
            usage = opt_obj(message.get("usage"), "message_start.message.usage")
            _usage(usage, "message_start.message.usage")
            self.base["id"] = text(message.get("id"), "message_start.message.id")
            self.base["model"] = text(message.get("model"), "message_start.message.model",
                                      self.base["model"])
            self.usage.update(usage)
            self.started = True
            return self.chunk({"role": "assistant", "content": ""})
        if not self.started and kind in ("content_block_start", "content_block_delta",
                                         "message_delta"):
            raise Malformed(f"{kind} before message_start")
        if kind == "content_block_start":
            index = count(payload.get("index"), "content_block_start.index")
            block = obj(payload.get("content_block"), "content_block_start.content_block")
            if block.get("type") == "tool_use":
                self.tools[index] = len(self.tools)
                return self.chunk({"tool_calls": [{
                    "index": self.tools[index], "type": "function",
                    "id": text(block.get("id"), "content_block.id"),
                    "function": {"name": text(block.get("name"), "content_block.name"),
                                 "arguments": ""}}]})
            found = text(block.get("text"), "content_block.text")
            return self.chunk({"content": found}) if found else None
        if kind == "content_block_delta":
            index = count(payload.get("index"), "content_block_delta.index")
            delta = obj(payload.get("delta"), "content_block_delta.delta")
            if delta.get("type") == "text_delta":
                return self.chunk({"content": text(delta.get("text"), "text_delta.text")})
            if delta.get("type") == "input_json_delta":
                return self.chunk({"tool_calls": [{
                    "index": self.tools.get(index, 0), "function": {
                        "arguments": text(delta.get("partial_json"),
                                          "input_json_delta.partial_json")}}]})
            return None  # thinking and signature deltas have no OpenAI chunk
        if kind == "message_delta":
            usage = opt_obj(payload.get("usage"), "message_delta.usage")
            _usage(usage, "message_delta.usage")
            reason = text(opt_obj(payload.get("delta"), "message_delta.delta").get(
                "stop_reason"), "message_delta.delta.stop_reason")
            self.usage.update(usage)
            self.complete = True  # the usage is in this event too
            return self.chunk({}, FINISH.get(reason, "stop"))
        if kind == "message_stop":
            self.ended = True
            return None
        if kind == "error":
            raise stream_failure(self.adapter, payload)
        return None  # ping, content_block_stop, and events yet to come

    def end(self) -> Body | None:
        return {**self.base, "choices": [], "usage": _usage(self.usage)} if self.started \
            else None


def stream_failure(adapter: Adapter, payload: Body) -> UpstreamError:
    error = payload.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    message, code = error_fields(payload)
    return adapter.status_error(STATUS.get(kind, 502) if isinstance(kind, str) else 502,
                                message, code)


class Anthropic(Adapter):
    default_base_url = "https://api.anthropic.com"

    def auth(self) -> dict[str, str]:
        headers = {"anthropic-version": VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def health_url(self, model: Model) -> str:
        return f"{self.base_url}/v1/models/{model.upstream}"

    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        return await self.post_json(f"{self.base_url}/v1/messages", to_messages(body, model),
                                    timeouts, lambda data: from_message(data, model))

    def stream(self, model: Model, body: Body, timeouts: Timeouts) -> AsyncIterator[Body]:
        return self.events(f"{self.base_url}/v1/messages",
                           lambda: {**to_messages(body, model), "stream": True}, timeouts,
                           Events(self, model))
