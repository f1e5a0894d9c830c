"""Anthropic's Messages API, both ways, against the internal chat form.

Upstream side, for an Anthropic provider serving a chat request: `request`
makes the Messages request (system and developer messages become the
top-level `system`; `max_tokens`, which Anthropic requires, comes from the
request or else the model's `max_output`; tool definitions, calls and results
are translated), `chat_answer` reads the message back, and `Events` turns its
stream events into chat chunks.

Client side, for `POST /v1/messages`: to an Anthropic provider the request
goes as the client wrote it (`native`: only the model is renamed, and
`anthropic-version` and `anthropic-beta` go along), and its answer and
events come back as they are (`Native`). To any other provider it goes
through chat: `chat_request` translates it, `message` and `Stream` bring the
answer back as a Message and its events, with content-block indices, stop
reasons and usage as Anthropic sends them. What chat cannot carry is named
in a 400 (server tools, documents other than PDF, images in tool results);
thinking blocks and Anthropic-only settings (`thinking`, `context_management`,
`output_config`, `top_k`, `cache_control`) are left out of a translation,
since another model can neither read nor honour them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import orjson

from compiler.compiled import Model
from runtime.errors import GatewayError, UpstreamError
from runtime.formats.base import Format, Slot, first_choices, texts_of, translated
from runtime.providers import chat
from runtime.providers.base import Adapter, Body, Decoder, error_fields
from runtime.providers.wire import Malformed, count, invalid, lst, obj, opt_lst, opt_obj, text

VERSION = "2023-06-01"
FORWARDED = ("anthropic-version", "anthropic-beta")  # the client's, to an Anthropic upstream
DEFAULT_MAX_TOKENS = 4096
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
          "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}
STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
        "function_call": "tool_use", "content_filter": "refusal"}
OVERLOADED = 529  # Anthropic's status for an overloaded API: a 5xx for retries
STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
          "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
          "api_error": 500, "overloaded_error": OVERLOADED}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               402: "billing_error", 403: "permission_error", 404: "not_found_error",
               413: "request_too_large", 429: "rate_limit_error", 499: "api_error",
               503: "overloaded_error", OVERLOADED: "overloaded_error"}


# ------------------------------------------------------------ upstream side

def _blocks(content: object, where: str) -> list[Body]:
    """OpenAI content parts as Anthropic content blocks."""
    blocks: list[Body] = []
    for part in chat.parts(content, where):
        if part.url is None:
            blocks.append({"type": "text", "text": part.text})
            continue
        inline = chat.data_url(part.url)
        if inline:
            kind = "document" if inline[0] == "application/pdf" else "image"
            blocks.append({"type": kind, "source": {"type": "base64", "media_type": inline[0],
                                                    "data": inline[1]}})
        else:
            blocks.append({"type": "image", "source": {"type": "url", "url": part.url}})
    return blocks


def request(body: Body, model: Model) -> Body:
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
    out: Body = {
        "model": model.upstream,
        "messages": messages,
        "max_tokens": chat.integer(body, "max_tokens") or
        chat.integer(body, "max_completion_tokens") or model.max_output or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(system)
    temperature = chat.number(body, "temperature")
    if temperature is not None:
        out["temperature"] = min(temperature, 1.0)  # Anthropic's range
    top_p = chat.number(body, "top_p")
    if top_p is not None:
        out["top_p"] = top_p
    stop = chat.stop(body)
    if stop:
        out["stop_sequences"] = stop
    tools = chat.tools(body)
    if tools:
        out["tools"] = [{"name": t.name, "description": t.description,
                         "input_schema": t.parameters or {"type": "object", "properties": {}}}
                        for t in tools]
    choice = chat.tool_choice(body)
    if choice == "required":
        out["tool_choice"] = {"type": "any"}
    elif choice in ("auto", "none"):
        out["tool_choice"] = {"type": choice}
    elif choice:
        out["tool_choice"] = {"type": "tool", "name": choice.removeprefix("function:")}
    if body.get("parallel_tool_calls") is False and "tool_choice" in out:
        out["tool_choice"]["disable_parallel_tool_use"] = True
    user = chat.user(body)
    if user:
        out["metadata"] = {"user_id": user}
    return out


def usage(raw: Body, where: str = "usage") -> Body:
    """Anthropic's usage in OpenAI's terms. Anthropic's `input_tokens` leaves out the
    cache's reads and writes, which it bills apart; OpenAI's `prompt_tokens` holds
    them, with the reads in `prompt_tokens_details.cached_tokens`, and the writes go
    beside them as `cache_write_tokens` (OpenRouter's name), so each is priced."""
    fresh = count(raw.get("input_tokens"), f"{where}.input_tokens")
    written = count(raw.get("cache_creation_input_tokens"),
                    f"{where}.cache_creation_input_tokens")
    read = count(raw.get("cache_read_input_tokens"), f"{where}.cache_read_input_tokens")
    completion = count(raw.get("output_tokens"), f"{where}.output_tokens")
    prompt = fresh + written + read
    out: Body = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
    if written or read:
        out["prompt_tokens_details"] = {"cached_tokens": read, "cache_write_tokens": written}
    return out


def chat_answer(data: Body, model: Model) -> Body:
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
        "usage": usage(opt_obj(data.get("usage"), "usage")),
    }


def _event(data: bytes, name: str) -> tuple[Body, str]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"an event is not JSON ({exc})") from exc
    payload = obj(payload, "an event")
    return payload, text(payload.get("type"), "an event's type", name)


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
        payload, kind = _event(data, name)
        if kind == "message_start":
            message = obj(payload.get("message"), "message_start.message")
            found = opt_obj(message.get("usage"), "message_start.message.usage")
            usage(found, "message_start.message.usage")
            self.base["id"] = text(message.get("id"), "message_start.message.id")
            self.base["model"] = text(message.get("model"), "message_start.message.model",
                                      self.base["model"])
            self.usage.update(found)
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
            said = text(block.get("text"), "content_block.text")
            return self.chunk({"content": said}) if said else None
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
            found = opt_obj(payload.get("usage"), "message_delta.usage")
            usage(found, "message_delta.usage")
            reason = text(opt_obj(payload.get("delta"), "message_delta.delta").get(
                "stop_reason"), "message_delta.delta.stop_reason")
            self.usage.update(found)
            self.complete = True  # the usage is in this event too
            return self.chunk({}, FINISH.get(reason, "stop"))
        if kind == "message_stop":
            self.ended = True
            return None
        if kind == "error":
            raise stream_failure(self.adapter, payload)
        return None  # ping, content_block_stop, and events yet to come

    def end(self) -> Body | None:
        return {**self.base, "choices": [], "usage": usage(self.usage)} if self.started \
            else None


def stream_failure(adapter: Adapter, payload: Body) -> UpstreamError:
    error = payload.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    message, code = error_fields(payload)
    return adapter.status_error(STATUS.get(kind, 502) if isinstance(kind, str) else 502,
                                message, code)


# --------------------------------------------- client side, to Anthropic itself

def native(body: Body, model: Model) -> Body:
    """The client's Messages request as an Anthropic upstream gets it: as written,
    under the model's upstream name."""
    return {**body, "model": model.upstream}


def checked(data: Body) -> Body:
    """An upstream's message, passed on as it came once what gwc reads of it (and keeps,
    and replays) is there: a list of blocks, each an object with a type, and a usage."""
    for i, block in enumerate(lst(data.get("content"), "content")):
        text(obj(block, f"content[{i}]").get("type"), f"content[{i}].type")
    usage(opt_obj(data.get("usage"), "usage"))
    return data


def counted(data: Body) -> Body:
    """An upstream's token count, passed on once its count is there."""
    count(data.get("input_tokens"), "input_tokens")
    return data


class Native(Decoder):
    """Anthropic's stream events passed on as they are, each checked as `Events` would."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def event(self, name: str, data: bytes) -> Body | None:
        payload, kind = _event(data, name)
        if kind == "message_start":
            message = obj(payload.get("message"), "message_start.message")
            usage(opt_obj(message.get("usage"), "message_start.message.usage"),
                  "message_start.message.usage")
            self.started = True
        elif not self.started and kind in ("content_block_start", "content_block_delta",
                                           "message_delta"):
            raise Malformed(f"{kind} before message_start")
        elif kind == "message_delta":
            usage(opt_obj(payload.get("usage"), "message_delta.usage"), "message_delta.usage")
            self.complete = True
        elif kind == "message_stop":
            self.ended = True
        elif kind == "error":
            raise stream_failure(self.adapter, payload)
        return payload

    def end(self) -> Body | None:
        """The `message_stop` of a stream that was whole (its stop reason and usage
        came) but whose upstream never sent it, so the client's ends as Anthropic's do."""
        return {"type": "message_stop"} if self.complete and not self.ended else None


# ---------------------------------------------- client side, through chat

def _text_blocks(content: Any, where: str) -> str:
    """A `system` or a tool result: a string, or text blocks (their `cache_control` is
    Anthropic's own and goes no further)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(where, "must be a string or a list of text blocks")
    out = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text" \
                or not isinstance(block.get("text"), str):
            raise invalid(f"{where}[{i}]", "only text blocks can be sent to this provider")
        out.append(block["text"])
    return "\n\n".join(out)


def _part(block: Body, where: str) -> Body | None:
    """A user or assistant content block as a chat content part; None for a thinking
    block, which another model can neither read nor verify."""
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise invalid(f"{where}.text", "must be a string")
        return {"type": "text", "text": block["text"]}
    if kind in ("thinking", "redacted_thinking"):
        return None
    if kind in ("image", "document"):
        source = block.get("source")
        if not isinstance(source, dict):
            raise invalid(f"{where}.source", "must be an object")
        if source.get("type") == "url" and isinstance(source.get("url"), str) \
                and kind == "image":
            return {"type": "image_url", "image_url": {"url": source["url"]}}
        media, data = source.get("media_type"), source.get("data")
        if source.get("type") != "base64" or not isinstance(media, str) \
                or not isinstance(data, str):
            raise invalid(f"{where}.source", f"only a base64 {kind} can be sent to this "
                                             "provider")
        if kind == "image":
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
        if media != "application/pdf":
            raise invalid(f"{where}.source.media_type", "only a PDF document can be sent to "
                                                        "this provider")
        return {"type": "file", "file": {"filename": block.get("title") or "document.pdf",
                                         "file_data": f"data:{media};base64,{data}"}}
    raise invalid(f"{where}.type", f"content of type `{kind}` cannot be sent to this provider")


def _turn(role: str, content: Any, where: str) -> list[Body]:
    """One Messages turn as chat messages: a user turn's tool results become tool
    messages (before its other content, as they answer the turn before), an
    assistant turn's tool uses become its tool calls."""
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise invalid(f"{where}.content", "must be a string or a list of content blocks")
    parts: list[Body] = []
    calls: list[Body] = []
    results: list[Body] = []
    for i, block in enumerate(content):
        here = f"{where}.content[{i}]"
        if not isinstance(block, dict):
            raise invalid(here, "must be an object")
        kind = block.get("type")
        if kind == "tool_use" and role == "assistant":
            ident, name = block.get("id"), block.get("name")
            if not isinstance(ident, str) or not isinstance(name, str) or not name:
                raise invalid(here, "a tool_use needs an `id` and a `name`")
            calls.append({"id": ident, "type": "function", "function": {
                "name": name, "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind == "tool_result" and role == "user":
            ident = block.get("tool_use_id")
            if not isinstance(ident, str):
                raise invalid(f"{here}.tool_use_id", "must be a string")
            found = block.get("content", "")
            result = _text_blocks(found, f"{here}.content") if found else ""
            if block.get("is_error") is True:
                result = f"Error: {result}"
            results.append({"role": "tool", "tool_call_id": ident, "content": result})
        else:
            part = _part(block, here)
            if part is not None:
                parts.append(part)
    out = list(results)
    if role == "assistant":
        text_only = all(p["type"] == "text" for p in parts)
        message: Body = {"role": "assistant",
                         "content": "".join(p["text"] for p in parts) if text_only else parts}
        if calls:
            message["tool_calls"] = calls
            message["content"] = message["content"] or None
        if parts or calls:
            out.append(message)
    elif parts:
        out.append({"role": role, "content": parts})
    return out


def _tools(found: Any) -> list[Body]:
    if not isinstance(found, list):
        raise invalid("tools", "must be a list")
    out = []
    for i, tool in enumerate(found):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid(where, "must be an object")
        if tool.get("type") not in (None, "custom"):
            raise invalid(f"{where}.type", f"the server tool `{tool.get('type')}` runs only "
                                           "on Anthropic")
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise invalid(f"{where}.name", "must be a non-empty string")
        if schema is not None and not isinstance(schema, dict):
            raise invalid(f"{where}.input_schema", "must be an object (a JSON Schema)")
        function: Body = {"name": name, "parameters": schema or {
            "type": "object", "properties": {}}}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def chat_request(body: Body, origins: list[str] | None = None) -> Body:
    """A Messages request as a chat request, for a provider that speaks only chat;
    `origins` gets where each chat message came from (`base.renamed` reads it)."""
    messages: list[Body] = []
    came: list[str] = []
    if body.get("system"):
        messages.append({"role": "system",
                         "content": _text_blocks(body["system"], "system")})
        came.append("system")
    for i, turn in enumerate(body.get("messages") or ()):
        where = f"messages[{i}]"
        if not isinstance(turn, dict):
            raise invalid(where, "must be an object")
        role = turn.get("role")
        if role == "system":  # a beta: instructions in the middle of the conversation
            messages.append({"role": "system",
                             "content": _text_blocks(turn.get("content"), f"{where}.content")})
        elif role in ("user", "assistant"):
            messages.extend(_turn(role, turn.get("content"), where))
        else:
            raise invalid(f"{where}.role", 'must be "user" or "assistant"')
        came += [where] * (len(messages) - len(came))
    if origins is not None:
        origins[:] = came
    out: Body = {"model": body.get("model"), "messages": messages,
                 "max_tokens": body.get("max_tokens")}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop_sequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(one, str) for one in stop):
            raise invalid("stop_sequences", "must be a list of strings")
        out["stop"] = stop
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind, name = choice.get("type"), choice.get("name")
        if kind == "tool":
            if not isinstance(name, str) or not name:
                raise invalid("tool_choice.name", "must be a non-empty string")
            out["tool_choice"] = {"type": "function", "function": {"name": name}}
        elif kind in ("auto", "none", "any"):
            out["tool_choice"] = "required" if kind == "any" else kind
        else:
            raise invalid("tool_choice.type", 'must be "auto", "any", "tool" or "none"')
        if choice.get("disable_parallel_tool_use") is True:
            out["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _raw_usage(completion_usage: Any) -> Body:
    """Chat usage as Anthropic counts it: cached input apart from the fresh."""
    found = completion_usage if isinstance(completion_usage, dict) else {}
    details = found.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    written = (details.get("cache_write_tokens") or 0) if isinstance(details, dict) else 0
    prompt = found.get("prompt_tokens") or 0
    return {"input_tokens": max(prompt - cached - written, 0),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": cached,
            "output_tokens": found.get("completion_tokens") or 0}


def message_id() -> str:
    return f"msg_gw{secrets.token_hex(12)}"


def message(completion: Body) -> Body:
    """A chat completion as a Message: its text, then its tool calls as tool_use blocks
    (`Malformed` for a completion out of shape, which the chain falls back from)."""
    choices = lst(completion.get("choices"), "choices")
    choice = obj(choices[0], "choices[0]") if choices else {}
    said = opt_obj(choice.get("message"), "choices[0].message")
    content: list[Body] = []
    found = text(said.get("content"), "choices[0].message.content")
    if found:
        content.append({"type": "text", "text": found})
    for i, call in enumerate(opt_lst(said.get("tool_calls"), "choices[0].message.tool_calls")):
        where = f"choices[0].message.tool_calls[{i}]"
        function = obj(obj(call, where).get("function"), f"{where}.function")
        content.append({"type": "tool_use",
                        "id": text(call.get("id"), f"{where}.id") or message_id(),
                        "name": text(function.get("name"), f"{where}.function.name"),
                        "input": chat.arguments(function.get("arguments"))})
    return {"id": message_id(), "type": "message", "role": "assistant",
            "model": completion.get("model"), "content": content,
            "stop_reason": STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None, "usage": _raw_usage(completion.get("usage"))}


class Stream:
    """Chat chunks as a Message's stream events: a block opened at its first delta and
    closed when the next begins, indices counted as Anthropic does, the stop reason and
    usage in the closing `message_delta`."""

    def __init__(self) -> None:
        self.index = -1
        self.open: str | None = None  # "text", or the chat tool call index as "tool:N"
        self.stop: str | None = None
        self.usage: Body = {}

    def _close(self) -> list[Body]:
        if self.open is None:
            return []
        self.open = None
        return [{"type": "content_block_stop", "index": self.index}]

    def _start(self, kind: str, block: Body) -> list[Body]:
        out = self._close()
        self.index += 1
        self.open = kind
        return [*out, {"type": "content_block_start", "index": self.index,
                       "content_block": block}]

    def start(self, first: Body) -> list[Body]:
        """The `message_start` the first chunk opens with, under the model it names."""
        return [{"type": "message_start", "message": {
            "id": message_id(), "type": "message", "role": "assistant",
            "model": first.get("model"), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}]

    def chunk(self, chunk: Body) -> list[Body]:
        out: list[Body] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in first_choices(chunk):
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            said = delta.get("content")
            if isinstance(said, str) and said:
                if self.open != "text":
                    out += self._start("text", {"type": "text", "text": ""})
                out.append({"type": "content_block_delta", "index": self.index,
                            "delta": {"type": "text_delta", "text": said}})
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                out += self._call(call) if isinstance(call, dict) else []
            if isinstance(choice.get("finish_reason"), str):
                self.stop = STOP.get(choice["finish_reason"], "end_turn")
        return out

    def _call(self, call: Body) -> list[Body]:
        """A tool call's delta: a new call opens its block, its arguments go as JSON
        deltas (junk in it is skipped, as in any chunk of a stream that has begun)."""
        out: list[Body] = []
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        kind = f"tool:{call.get('index', 0)}"
        if self.open != kind:
            ident, name = call.get("id"), function.get("name")
            out += self._start(kind, {"type": "tool_use",
                                      "id": ident if isinstance(ident, str) and ident
                                      else message_id(),
                                      "name": name if isinstance(name, str) else "",
                                      "input": {}})
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append({"type": "content_block_delta", "index": self.index,
                        "delta": {"type": "input_json_delta", "partial_json": arguments}})
        return out

    def end(self) -> list[Body]:
        return [*self._close(),
                {"type": "message_delta", "delta": {"stop_reason": self.stop or "end_turn",
                                                    "stop_sequence": None},
                 "usage": _raw_usage(self.usage)},
                {"type": "message_stop"}]


def from_chat_stream(chunks: AsyncIterator[Body], origins: Sequence[str] = ()
                     ) -> AsyncIterator[Body]:
    """A chat stream as a Message's events."""
    stream = Stream()
    return translated(chunks, stream.start, stream.chunk, stream.end, origins)


# -------------------------------------------------------- the pipeline's view

class Messages(Format):
    name = "messages"

    def usage(self, raw: Body) -> Body:
        try:
            return usage(raw)
        except Malformed:
            return {}

    def chunk_usage(self, chunk: Body) -> Body | None:
        kind = chunk.get("type")
        if kind == "message_start":
            found = (chunk.get("message") or {}).get("usage")
        elif kind == "message_delta":
            found = chunk.get("usage")
        else:
            return None
        if not isinstance(found, dict) or not any(found.values()):
            return None  # zeros (a translated stream's start) count nothing yet
        return {k: v for k, v in found.items() if v is not None}

    def chunk_text(self, chunk: Body) -> int:
        if chunk.get("type") != "content_block_delta":
            return 0
        delta = chunk.get("delta") or {}
        said = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
        return len(said) if isinstance(said, str) else 0

    def frame(self, chunk: Body) -> bytes:
        kind = chunk.get("type") or "message"
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(chunk) + b"\n\n"

    def error(self, error: GatewayError) -> Body:
        return {"type": "error", "error": {
            "type": ERROR_TYPES.get(error.status, "api_error" if error.status >= 500
                                    else "invalid_request_error"),
            "message": error.message}}

    def broken(self, error: GatewayError) -> bytes:
        return self.frame(self.error(error))

    def fresh(self, answer: Body) -> Body:
        return {**answer, "id": message_id()}

    async def replay(self, answer: Body, include_usage: bool) -> AsyncIterator[Body]:
        """As Anthropic streams a message: its start, each block's start, delta and
        stop, then the stop reason and usage."""
        raw = answer.get("usage") or {}
        start: Body
        delta: Body
        yield {"type": "message_start", "message": {
            **answer, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {**raw, "output_tokens": 0}}}
        for index, block in enumerate(answer.get("content") or ()):
            kind = block.get("type")
            if kind == "text":
                start, delta = {"type": "text", "text": ""}, {"type": "text_delta",
                                                              "text": block.get("text", "")}
            elif kind == "tool_use":
                start = {**block, "input": {}}
                delta = {"type": "input_json_delta",
                         "partial_json": orjson.dumps(block.get("input") or {}).decode()}
            else:  # thinking: its text, then its signature
                start = {"type": "thinking", "thinking": ""}
                delta = {"type": "thinking_delta", "thinking": block.get("thinking", "")}
            yield {"type": "content_block_start", "index": index, "content_block": start}
            yield {"type": "content_block_delta", "index": index, "delta": delta}
            if kind == "thinking" and block.get("signature"):
                yield {"type": "content_block_delta", "index": index,
                       "delta": {"type": "signature_delta", "signature": block["signature"]}}
            yield {"type": "content_block_stop", "index": index}
        yield {"type": "message_delta", "delta": {"stop_reason": answer.get("stop_reason"),
                                                  "stop_sequence": answer.get("stop_sequence")},
               "usage": raw}
        yield {"type": "message_stop"}

    def assembled(self, chunks: list[Body], usage: Body) -> Body | None:
        """The message its events built: text, tool uses and signed thinking kept;
        anything else (a server tool's result, a redacted block), and events out of
        shape (an upstream's junk, passed on as it came), is not kept."""
        try:
            return _assembled(chunks)
        except (TypeError, AttributeError, KeyError, ValueError):
            return None

    def said(self, answer: Body) -> Iterator[Slot]:
        return texts_of(answer, "content")

    def delta(self, chunk: Body) -> Slot | None:
        if chunk.get("type") != "content_block_delta":
            return None
        delta = chunk.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta" \
                and isinstance(delta.get("text"), str):
            return delta, "text"
        return None

    def closes(self, chunk: Body) -> bool:
        """Anything but a piece of text or a `ping`: a text block's stop, above all."""
        return chunk.get("type") != "ping" and self.delta(chunk) is None


def prompt(body: Body) -> Iterator[Slot]:
    """A Messages request's texts: its system prompt, its turns' and their tool results'."""
    yield from texts_of(body, "system")
    turns = body.get("messages")
    for turn in turns if isinstance(turns, list) else ():
        yield from texts_of(turn, "content")
        content = turn.get("content") if isinstance(turn, dict) else None
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_result":
                yield from texts_of(block, "content")


def _assembled(chunks: list[Body]) -> Body | None:
    found: Body | None = None
    blocks: dict[int, Body] = {}
    partial: dict[int, list[str]] = {}
    for event in chunks:
        kind = event.get("type")
        if kind == "message_start":
            found = {**(event.get("message") or {})}
        elif kind == "content_block_start":
            block: Body = {**event["content_block"]}
            if block.get("type") not in ("text", "tool_use", "thinking"):
                return None
            blocks[event.get("index", 0)] = block
        elif kind == "content_block_delta":
            index, delta = event.get("index", 0), event.get("delta") or {}
            block = blocks[index]
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                partial.setdefault(index, []).append(delta.get("partial_json", ""))
            elif delta.get("type") == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif delta.get("type") == "signature_delta":
                block["signature"] = delta.get("signature")
        elif kind == "message_delta" and found is not None:
            found.update(event.get("delta") or {})
            found["usage"] = {**(found.get("usage") or {}), **(event.get("usage") or {})}
    if found is None:
        return None
    for index, pieces in partial.items():
        blocks[index]["input"] = orjson.loads("".join(pieces) or "{}")  # ValueError: junk
    found["content"] = [blocks[i] for i in sorted(blocks)]
    return found


MESSAGES = Messages()
