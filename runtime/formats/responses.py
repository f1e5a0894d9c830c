"""OpenAI's Responses API (`POST /v1/responses`) against the internal chat form.

`to_chat` makes a chat request of a Responses request and the stored history
of the chain it continues; `from_chat` and `Stream` bring a chat completion,
or its chunks, back as a Response and its typed events; `usage` reads a
Response's usage in chat's terms, for an upstream that speaks Responses
natively. Errors need nothing new: the Responses API answers them in OpenAI's
`{"error": {...}}` shape, which `GatewayError.body` already is.

How the translation reads a request:

- `instructions` becomes a system message ahead of everything, and is not
  part of the history (the API does not carry instructions over either);
  `system` and `developer` items become system messages where they stand.
- Content parts: `input_text` and `output_text` are text, `refusal` an
  assistant's refusal, `input_image` an `image_url` part and `input_file`
  a `file` part (in user messages, as chat has them); a `file_id`-only image
  or a `file_url` file lives on OpenAI's servers and is a 400.
- `function_call` items join the assistant message before them as
  `tool_calls` (so consecutive ones make one assistant turn), and
  `function_call_output` items become tool messages of text.
- `reasoning` items are dropped: another model can neither read them
  (they are encrypted) nor needs them to go on. Any other item (an
  `item_reference`, a hosted tool's call) is a 400 naming it; in the stored
  history, a 400 naming `previous_response_id`, so such a chain fails closed.
- Tools: `function` tools become chat's; a `namespace` tool's functions
  become chat functions named `NAMESPACE__NAME`, and their calls come back
  as `function_call` items with `namespace` and `name` apart again. Every
  other tool (`web_search`, `file_search`, `code_interpreter`, `mcp`,
  `custom`, ...) is a 400 naming `tools[i]`: each runs on OpenAI's servers or
  takes free-form input, which the chat form the gateway translates through
  does not carry, and leaving one out would answer a different request than
  was asked. `strict` is carried only where given (Responses assumes it,
  chat does not).
- `tool_choice` (modes, a function, allowed function tools) and
  `parallel_tool_calls` go only with tools, as chat requires; a choice that
  asks for a tool without any is a 400. `max_output_tokens` (as
  `max_completion_tokens`), `text.format` (as `response_format`),
  `text.verbosity`, `reasoning.effort`, `temperature`, `top_p`, `user`,
  `metadata`, `prompt_cache_key`, `safety_identifier` and `service_tier`
  are carried; `stream` asks for the usage chunk too.
- `background`, `conversation` and `prompt` need OpenAI's own state and are
  a 400. `store`, `previous_response_id` and `include` are the gateway's to
  act on; `truncation`, `max_tool_calls` (a bound on hosted tool calls) and
  `top_logprobs` are left out, as are fields this module does not know:
  none changes what a chat upstream is asked.

Ids: the caller mints the response's id (`new_id`); the items' ids derive
from it (`msg_<id>_<index>`), so a streamed answer and the same answer
whole are the same Response.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import orjson

from compiler.compiled import Model
from runtime.errors import GatewayError
from runtime.formats.base import Format, Slot, first_choices, texts_of, translated
from runtime.providers import wire
from runtime.providers.base import Adapter, Decoder, error_fields
from runtime.providers.wire import NUMBERS, Body, Malformed, count, invalid, lst, obj, opt_obj

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
JOIN = "__"  # between a namespace and a function's name, in the chat tool's name
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
CARRIED = ("user", "prompt_cache_key", "safety_identifier", "service_tier")  # strings as they are
REFUSED = {"background": "a chat completions upstream cannot run a response in the background",
           "conversation": "conversations live on OpenAI's servers; continue with "
                           "`previous_response_id`",
           "prompt": "prompt templates live on OpenAI's servers"}


def new_id() -> str:
    """A response's id, as OpenAI's look: `resp_` and 50 hex digits."""
    return "resp_" + secrets.token_hex(25)


# ------------------------------------------------------------------ request

def items(request: Body) -> list[Body]:
    """The request's input as items, to store as the start of its history (a string
    input is one user message)."""
    return [item for item, _ in _input(request)]


def _input(request: Body) -> list[tuple[Body, str]]:
    given = request.get("input")
    if given is None:
        return []
    if isinstance(given, str):
        return [({"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": given}]}, "input")]
    if not isinstance(given, list):
        raise invalid("input", "must be a string or a list of items")
    out = []
    for i, item in enumerate(given):
        if not isinstance(item, dict):
            raise invalid(f"input[{i}]", "must be an object")
        out.append((item, f"input[{i}]"))
    return out


def to_chat(request: Body, history: list[Body] | None = None,
            origins: list[str] | None = None) -> Body:
    """A Responses request, after the stored `history` of the chain it continues
    (oldest first), as a chat request; a 400 naming the field it cannot carry.
    `origins` gets where each chat message came from (`base.renamed` reads it)."""
    if not isinstance(request, dict):
        raise GatewayError(400, "the request body must be a JSON object", "invalid_body")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "must be a non-empty string")
    for field, why in REFUSED.items():
        if request.get(field) is not None and request.get(field) is not False:
            raise invalid(field, why)
    messages: list[Body] = []
    came: list[str] = []
    instructions = _string(request, "instructions", "instructions", optional=True)
    if instructions:
        messages.append({"role": "system", "content": instructions})
        came.append("instructions")
    for i, item in enumerate(history or ()):
        try:
            _add(messages, _object(item, f"item {i}"), f"item {i}")
        except GatewayError as exc:
            raise invalid("previous_response_id", "the stored responses it continues cannot "
                                                  f"be sent to this model: {exc.message}") from exc
        came += ["previous_response_id"] * (len(messages) - len(came))
    for item, where in _input(request):
        _add(messages, item, where)
        came += [where] * (len(messages) - len(came))
    if origins is not None:
        origins[:] = came
    if not messages:
        raise invalid("input", "must hold at least one message")
    out: Body = {"model": model, "messages": messages}
    tools = _tools(request)
    if tools:
        out["tools"] = tools
        parallel = request.get("parallel_tool_calls")
        if parallel is not None:
            out["parallel_tool_calls"] = _boolean(parallel, "parallel_tool_calls")
    choice = _tool_choice(request.get("tool_choice"))
    if tools and choice is not None:
        out["tool_choice"] = choice
    elif not tools and choice not in (None, "auto", "none"):  # chat takes it only with tools
        raise invalid("tool_choice", "asks for a tool, but the request offers none")
    limit = _integer(request, "max_output_tokens")
    if limit is not None:
        out["max_completion_tokens"] = limit
    for key, top in (("temperature", 2), ("top_p", 1)):
        number = _number(request, key, top)
        if number is not None:
            out[key] = number
    for key in CARRIED:
        value = _string(request, key, key, optional=True)
        if value:
            out[key] = value
    metadata = request.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or \
                not all(isinstance(v, str) for v in metadata.values()):
            raise invalid("metadata", "must be an object of strings")
        out["metadata"] = metadata
    _text_config(request.get("text"), out)
    reasoning = request.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise invalid("reasoning", "must be an object")
        effort = _string(reasoning, "effort", "reasoning.effort", optional=True)
        if effort:
            out["reasoning_effort"] = effort
    if _boolean(request.get("stream", False), "stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _object(value: Any, where: str) -> Body:
    if not isinstance(value, dict):
        raise invalid(where, "must be an object")
    return value


def _add(messages: list[Body], item: Body, where: str) -> None:
    """One item onto the chat messages."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise invalid(f"{where}.role", 'must be "user", "assistant", "system" or "developer"')
        messages.append({"role": ROLES[role],
                         "content": _content(item.get("content"), f"{where}.content", role)})
    elif kind == "function_call":
        name = _string(item, "name", f"{where}.name")
        namespace = _string(item, "namespace", f"{where}.namespace", optional=True)
        call = {"id": _string(item, "call_id", f"{where}.call_id"), "type": "function",
                "function": {"name": _joined(namespace, name),
                             "arguments": _string(item, "arguments", f"{where}.arguments",
                                                  empty=True)}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append({"role": "tool",
                         "tool_call_id": _string(item, "call_id", f"{where}.call_id"),
                         "content": _tool_output(item.get("output"), f"{where}.output")})
    elif kind != "reasoning":
        raise invalid(f"{where}.type", f"items of type `{kind}` cannot be sent to a chat "
                                       "completions upstream")


def _content(content: Any, where: str, role: str) -> str | list[Body]:
    """A message item's content as chat content: one text part becomes a string."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(where, "must be a string or a list of content parts")
    parts: list[Body] = []
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise invalid(here, "must be an object")
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": _string(part, "text", f"{here}.text",
                                                          empty=True)})
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "refusal",
                          "refusal": _string(part, "refusal", f"{here}.refusal", empty=True)})
        elif kind == "input_image" and role == "user":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise invalid(f"{here}.image_url", "must be a URL or a data: URL (an uploaded "
                                                   "file cannot be sent to this model)")
            image = {"url": url}
            if part.get("detail") in ("auto", "low", "high"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and role == "user":
            file = {k: part[k] for k in ("file_data", "file_id", "filename")
                    if isinstance(part.get(k), str)}
            if "file_data" not in file and "file_id" not in file:
                raise invalid(here, "needs `file_data` or `file_id` (a `file_url` cannot be "
                                    "sent to this model)")
            parts.append({"type": "file", "file": file})
        else:
            raise invalid(f"{here}.type", f"content of type `{kind}` cannot be sent in a "
                                          f"`{role}` message to a chat completions upstream")
    if not parts:
        return ""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _tool_output(output: Any, where: str) -> str | list[Body]:
    """A function call's output as a tool message's content, which chat takes as text."""
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise invalid(where, "must be a string or a list of content parts")
    parts = []
    for j, part in enumerate(output):
        here = f"{where}[{j}]"
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            raise invalid(here, "must be a text part: a chat completions upstream takes only "
                                "text as a tool's output")
        parts.append({"type": "text", "text": _string(part, "text", f"{here}.text",
                                                      empty=True)})
    return parts


def _joined(namespace: str | None, name: str) -> str:
    return f"{namespace}{JOIN}{name}" if namespace else name


def _tools(request: Body) -> list[Body]:
    found = request.get("tools")
    if found is None:
        return []
    if not isinstance(found, list):
        raise invalid("tools", "must be a list")
    out: list[Body] = []
    seen: set[str] = set()
    for i, tool in enumerate(found):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid(where, "must be an object")
        kind = tool.get("type")
        functions: list[tuple[Any, str, str | None]]
        if kind == "function":
            functions = [(tool, where, None)]
        elif kind == "namespace":
            group = _string(tool, "name", f"{where}.name")
            members = tool.get("tools")
            if not isinstance(members, list):
                raise invalid(f"{where}.tools", "must be a list")
            functions = [(member, f"{where}.tools[{j}]", group)
                         for j, member in enumerate(members)]
        else:
            raise invalid(where, f"tools of type `{kind}` cannot be sent to a chat completions "
                                 "upstream, which runs only `function` and `namespace` tools")
        for function, here, within in functions:
            converted = _function(function, here, within)
            name = converted["function"]["name"]
            if name in seen:
                raise invalid(here, f"another tool is named `{name}` already")
            seen.add(name)
            out.append(converted)
    return out


def _function(tool: Any, where: str, namespace: str | None) -> Body:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise invalid(where, "must be a `function` tool")
    function: Body = {"name": _joined(namespace, _string(tool, "name", f"{where}.name"))}
    description = _string(tool, "description", f"{where}.description", optional=True)
    if description:
        function["description"] = description
    parameters = tool.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise invalid(f"{where}.parameters", "must be an object")
        function["parameters"] = parameters
    strict = tool.get("strict")
    if strict is not None:
        function["strict"] = _boolean(strict, f"{where}.strict")
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if choice is None or (isinstance(choice, str) and choice in ("auto", "none", "required")):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function",
                "function": {"name": _string(choice, "name", "tool_choice.name")}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        mode = choice.get("mode")
        if mode not in ("auto", "required"):
            raise invalid("tool_choice.mode", 'must be "auto" or "required"')
        allowed = choice.get("tools")
        if not isinstance(allowed, list):
            raise invalid("tool_choice.tools", "must be a list")
        names = []
        for j, tool in enumerate(allowed):
            where = f"tool_choice.tools[{j}]"
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise invalid(where, "must be a `function` tool for a chat completions upstream")
            names.append({"type": "function",
                          "function": {"name": _string(tool, "name", f"{where}.name")}})
        return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": names}}
    raise invalid("tool_choice", 'must be "auto", "none", "required", a function or allowed '
                                 "functions for a chat completions upstream")


def _text_config(config: Any, out: Body) -> None:
    """`text.format` as chat's `response_format`, and `text.verbosity`."""
    if config is None:
        return
    if not isinstance(config, dict):
        raise invalid("text", "must be an object")
    shape = config.get("format")
    if shape is not None:
        if not isinstance(shape, dict):
            raise invalid("text.format", "must be an object")
        kind = shape.get("type")
        if kind == "json_object":
            out["response_format"] = {"type": "json_object"}
        elif kind == "json_schema":
            schema = shape.get("schema")
            if not isinstance(schema, dict):
                raise invalid("text.format.schema", "must be an object")
            spec: Body = {"name": _string(shape, "name", "text.format.name"), "schema": schema}
            description = _string(shape, "description", "text.format.description",
                                  optional=True)
            if description:
                spec["description"] = description
            if shape.get("strict") is not None:
                spec["strict"] = _boolean(shape["strict"], "text.format.strict")
            out["response_format"] = {"type": "json_schema", "json_schema": spec}
        elif kind != "text":
            raise invalid("text.format.type", 'must be "text", "json_object" or "json_schema"')
    verbosity = config.get("verbosity")
    if verbosity is not None:
        if verbosity not in ("low", "medium", "high"):
            raise invalid("text.verbosity", 'must be "low", "medium" or "high"')
        out["verbosity"] = verbosity


def _string(holder: Body, key: str, where: str, *, optional: bool = False,
            empty: bool = False) -> str:
    """A string field; a missing or null optional one is ""."""
    value = holder.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise invalid(where, "must be a string")
    if not value and not (empty or optional):
        raise invalid(where, "must not be empty")
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(where, "must be a boolean")
    return value


def _number(request: Body, key: str, top: float) -> float | None:
    value = request.get(key)
    if value is None:
        return None
    if type(value) not in NUMBERS or not 0 <= value <= top:
        raise invalid(key, f"must be a number from 0 to {top}")
    return float(value)


def _integer(request: Body, key: str) -> int | None:
    """A count of at least 1; JSON's `2.0` is taken as 2, as chat takes it."""
    value = request.get(key)
    if value is None:
        return None
    if type(value) not in NUMBERS or value != value // 1 or value < 1 or value >= 2 ** 63:
        raise invalid(key, "must be an integer of at least 1")
    return int(value)


# ----------------------------------------------------------------- response

def _namespaces(request: Body) -> dict[str, tuple[str, str]]:
    """The chat names of a request's namespaced functions, to their namespace and name."""
    out: dict[str, tuple[str, str]] = {}
    for tool in request.get("tools") or ():
        if isinstance(tool, dict) and tool.get("type") == "namespace" and \
                isinstance(tool.get("name"), str) and isinstance(tool.get("tools"), list):
            for member in tool["tools"]:
                if isinstance(member, dict) and isinstance(member.get("name"), str):
                    out[_joined(tool["name"], member["name"])] = (tool["name"], member["name"])
    return out


def _item_id(kind: str, response_id: str, index: int) -> str:
    return f"{kind}_{response_id.removeprefix('resp_')}_{index}"


def _call_item(response_id: str, index: int, call_id: str, name: str, arguments: str,
               status: str, names: dict[str, tuple[str, str]]) -> Body:
    item: Body = {"id": _item_id("fc", response_id, index), "type": "function_call",
                  "status": status, "call_id": call_id or _item_id("call", response_id, index),
                  "name": name, "arguments": arguments}
    if name in names:
        item["namespace"], item["name"] = names[name]
    return item


def _message_item(response_id: str, index: int, status: str) -> Body:
    return {"id": _item_id("msg", response_id, index), "type": "message", "role": "assistant",
            "status": status, "content": []}


def _text_part(said: str) -> Body:
    return {"type": "output_text", "text": said, "annotations": [], "logprobs": []}


def _response_usage(found: Any) -> Body | None:
    """Chat usage in the Responses API's terms; None when the upstream gave none."""
    if not isinstance(found, dict):
        return None
    prompt = count(found.get("prompt_tokens"), "usage.prompt_tokens")
    completion = count(found.get("completion_tokens"), "usage.completion_tokens")
    read = opt_obj(found.get("prompt_tokens_details"), "usage.prompt_tokens_details")
    made = opt_obj(found.get("completion_tokens_details"), "usage.completion_tokens_details")
    return {"input_tokens": prompt,
            "input_tokens_details": {
                "cached_tokens": count(read.get("cached_tokens"),
                                       "usage.prompt_tokens_details.cached_tokens"),
                "cache_write_tokens": count(read.get("cache_write_tokens"),
                                            "usage.prompt_tokens_details.cache_write_tokens")},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": count(
                made.get("reasoning_tokens"), "usage.completion_tokens_details.reasoning_tokens")},
            "total_tokens": count(found.get("total_tokens"), "usage.total_tokens")
            or prompt + completion}


def _response(request: Body, response_id: str, created_at: float, status: str,
              output: list[Body], model: Any, usage: Body | None, reason: str | None = None,
              error: Body | None = None) -> Body:
    """A Response object, with the request's settings echoed as the API echoes them."""
    limit = request.get("max_output_tokens")
    return {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": status, "error": error,
        "incomplete_details": {"reason": reason} if reason else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": int(limit) if isinstance(limit, NUMBERS) else None,
        "model": model if isinstance(model, str) and model else request.get("model"),
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "store": request.get("store") is not False,
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation") or "disabled",
        "usage": usage, "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def from_chat(completion: Body, request: Body, response_id: str, created_at: float) -> Body:
    """A chat completion as a Response: its text and refusal one message item, each tool
    call a `function_call` item. A completion not in chat's shape raises `Malformed`."""
    choices = wire.lst(completion.get("choices"), "choices")
    choice = obj(choices[0], "choices[0]") if choices else {}
    message = opt_obj(choice.get("message"), "choices[0].message")
    finish = choice.get("finish_reason")
    reason = INCOMPLETE.get(finish) if isinstance(finish, str) else None
    status = "incomplete" if reason else "completed"
    output: list[Body] = []
    parts = []
    said = wire.text(message.get("content"), "choices[0].message.content")
    if said:
        parts.append(_text_part(said))
    refusal = wire.text(message.get("refusal"), "choices[0].message.refusal")
    if refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    calls = wire.opt_lst(message.get("tool_calls"), "choices[0].message.tool_calls")
    if parts:  # a message before calls was said whole, whatever cut the calls short
        output.append({**_message_item(response_id, 0, "completed" if calls else status),
                       "content": parts})
    names = _namespaces(request)
    for k, raw in enumerate(calls):
        where = f"choices[0].message.tool_calls[{k}]"
        call = obj(raw, where)
        function = obj(call.get("function"), f"{where}.function")
        output.append(_call_item(response_id, len(output),
                                 wire.text(call.get("id"), f"{where}.id"),
                                 wire.text(function.get("name"), f"{where}.function.name"),
                                 wire.text(function.get("arguments"),
                                           f"{where}.function.arguments"),
                                 status, names))
    return _response(request, response_id, created_at, status, output, completion.get("model"),
                     _response_usage(completion.get("usage")), reason)


def usage(response: Body) -> Body | None:
    """A Response's usage as the chat usage the gateway prices, for an upstream that
    speaks Responses natively; None when it gave none, `Malformed` when it is junk."""
    found = response.get("usage")
    if found is None:
        return None
    raw = obj(found, "usage")
    given = count(raw.get("input_tokens"), "usage.input_tokens")
    made = count(raw.get("output_tokens"), "usage.output_tokens")
    read = opt_obj(raw.get("input_tokens_details"), "usage.input_tokens_details")
    thought = opt_obj(raw.get("output_tokens_details"), "usage.output_tokens_details")
    details = {"cached_tokens": count(read.get("cached_tokens"),
                                      "usage.input_tokens_details.cached_tokens")}
    written = count(read.get("cache_write_tokens"),
                    "usage.input_tokens_details.cache_write_tokens")
    if written:
        details["cache_write_tokens"] = written
    return {"prompt_tokens": given, "completion_tokens": made,
            "total_tokens": count(raw.get("total_tokens"), "usage.total_tokens")
            or given + made,
            "prompt_tokens_details": details,
            "completion_tokens_details": {"reasoning_tokens": count(
                thought.get("reasoning_tokens"), "usage.output_tokens_details.reasoning_tokens")}}


# ------------------------------------------------------------------- stream

class Stream:
    """Chat chunks as the Responses API's typed events, numbered in order.

    A message item opens at the first text and closes when a tool call
    begins; a tool call's item stays open until the end, so that a provider
    interleaving calls' argument deltas still lands each in its own item.
    Junk in a chunk is skipped: a stream that has begun is not failed for it.
    """

    def __init__(self, request: Body, response_id: str, created_at: float) -> None:
        self.request = request
        self.id = response_id
        self.created_at = created_at
        self.names = _namespaces(request)
        self.model: Any = request.get("model")
        self.sequence = 0
        self.output: list[Body] = []
        self.message: int | None = None  # the open message item's output index
        self.calls: dict[int, int] = {}  # a chat tool call's index: its item's output index
        self.open: list[int] = []  # the items not yet done, by output index
        self.reason: str | None = None  # why the answer is incomplete, once it is
        self.raw_usage: Any = None
        self.status = "in_progress"
        self.error: Body | None = None

    def _event(self, kind: str, **fields: Any) -> Body:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def response(self) -> Body:
        """The Response as it stands: whole once `end` or `failed` has run."""
        return _response(self.request, self.id, self.created_at, self.status,
                         copy.deepcopy(self.output), self.model, self._usage(),
                         self.reason if self.status == "incomplete" else None, self.error)

    def _usage(self) -> Body | None:
        try:
            return _response_usage(self.raw_usage)
        except Malformed:  # a junk usage chunk leaves the answer without usage
            return None

    def start(self) -> list[Body]:
        return [self._event("response.created", response=self.response()),
                self._event("response.in_progress", response=self.response())]

    def chunk(self, chunk: Body) -> list[Body]:
        """The events one chat chunk makes (none for a role-only or usage chunk)."""
        events: list[Body] = []
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.raw_usage = chunk["usage"]
        for choice in first_choices(chunk):
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for kind, key in (("output_text", "content"), ("refusal", "refusal")):
                    if isinstance(delta.get(key), str) and delta[key]:
                        events += self._said(kind, delta[key])
                calls = delta.get("tool_calls")
                for position, call in enumerate(calls if isinstance(calls, list) else ()):
                    if isinstance(call, dict):
                        events += self._call(call, position)
            if isinstance(choice.get("finish_reason"), str):
                self.reason = INCOMPLETE.get(choice["finish_reason"])
        return events

    def _said(self, kind: str, delta: str) -> list[Body]:
        events: list[Body] = []
        if self.message is None:
            self.message = len(self.output)
            self.output.append(_message_item(self.id, self.message, "in_progress"))
            self.open.append(self.message)
            events.append(self._event("response.output_item.added", output_index=self.message,
                                      item=copy.deepcopy(self.output[self.message])))
        item = self.output[self.message]
        content = item["content"]
        if not content or content[-1]["type"] != kind:
            if content:
                events += self._part_done(self.message)
            content.append(_text_part("") if kind == "output_text"
                           else {"type": "refusal", "refusal": ""})
            events.append(self._event("response.content_part.added", item_id=item["id"],
                                      output_index=self.message,
                                      content_index=len(content) - 1,
                                      part=copy.deepcopy(content[-1])))
        where = {"item_id": item["id"], "output_index": self.message,
                 "content_index": len(content) - 1}
        if kind == "output_text":
            content[-1]["text"] += delta
            events.append(self._event("response.output_text.delta", **where, delta=delta,
                                      logprobs=[]))
        else:
            content[-1]["refusal"] += delta
            events.append(self._event("response.refusal.delta", **where, delta=delta))
        return events

    def _part_done(self, index: int) -> list[Body]:
        item = self.output[index]
        part = item["content"][-1]
        where = {"item_id": item["id"], "output_index": index,
                 "content_index": len(item["content"]) - 1}
        if part["type"] == "output_text":
            done = self._event("response.output_text.done", **where, text=part["text"],
                               logprobs=[])
        else:
            done = self._event("response.refusal.done", **where, refusal=part["refusal"])
        return [done, self._event("response.content_part.done", **where,
                                  part=copy.deepcopy(part))]

    def _call(self, call: Body, position: int) -> list[Body]:
        events: list[Body] = []
        index = call.get("index", position)
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        if not isinstance(index, int):
            return events
        if index not in self.calls:
            if self.message is not None:
                events += self._done(self.message, "completed")
            name = function.get("name")
            ident = call.get("id")
            at = len(self.output)
            self.output.append(_call_item(self.id, at, ident if isinstance(ident, str) else "",
                                          name if isinstance(name, str) else "", "",
                                          "in_progress", self.names))
            self.calls[index] = at
            self.open.append(at)
            events.append(self._event("response.output_item.added", output_index=at,
                                      item=copy.deepcopy(self.output[at])))
        at = self.calls[index]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self.output[at]["arguments"] += arguments
            events.append(self._event("response.function_call_arguments.delta",
                                      item_id=self.output[at]["id"], output_index=at,
                                      delta=arguments))
        return events

    def _done(self, index: int, status: str) -> list[Body]:
        """The events that finish one open item."""
        item = self.output[index]
        events: list[Body] = []
        if item["type"] == "message":
            if item["content"]:
                events += self._part_done(index)
            self.message = None
        else:
            events.append(self._event("response.function_call_arguments.done",
                                      item_id=item["id"], output_index=index,
                                      arguments=item["arguments"]))
        item["status"] = status
        self.open.remove(index)
        events.append(self._event("response.output_item.done", output_index=index,
                                  item=copy.deepcopy(item)))
        return events

    def end(self) -> list[Body]:
        """The done events of the items still open, then `response.completed`, or
        `response.incomplete` when the answer was cut at its length or by a filter."""
        self.status = "incomplete" if self.reason else "completed"
        events: list[Body] = []
        for index in sorted(self.open):
            events += self._done(index, self.status)
        kind = f"response.{self.status}"
        events.append(self._event(kind, response=self.response()))
        return events

    def failed(self, message: str, code: str = "server_error") -> list[Body]:
        """What ends a stream that broke after it began: `response.failed`, with the
        error and the output so far (its open items incomplete), so that no client
        takes it for a complete answer. `code` is one of the API's own error codes
        (`server_error`, `rate_limit_exceeded`, ...), which clients switch on."""
        for index in self.open:
            self.output[index]["status"] = "incomplete"
        self.open = []
        self.message = None
        self.status = "failed"
        self.error = {"code": code, "message": message}
        return [self._event("response.failed", response=self.response())]


def sse(event: Body) -> bytes:
    """One event as the API frames it: its type as the SSE event name."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + \
        b"\n\n"


def from_chat_stream(chunks: AsyncIterator[Body], request: Body,
                     origins: Sequence[str] = ()) -> AsyncIterator[Body]:
    """A chat stream as a Response's events, for a provider that speaks only chat."""
    stream = Stream(request, new_id(), time.time())
    return translated(chunks, lambda first: stream.start(), stream.chunk, stream.end, origins)


# ------------------------------------------ to an upstream that speaks Responses

MADE_HERE = ("message", "function_call", "function_call_output")  # their ids are optional


def inline(body: Body, history: tuple[Body, ...]) -> Body:
    """A follow-up as an upstream that keeps nothing takes it: the stored history ahead
    of its own input, and no `previous_response_id` (which the gateway keeps). A stored
    item goes without its id where the API makes ids optional, since such an upstream
    refuses ids it does not know."""
    if not history:
        return body
    given = {k: v for k, v in body.items() if k != "previous_response_id"}
    given["input"] = [*({k: v for k, v in item.items() if k != "id"}
                        if item.get("type") in MADE_HERE else item for item in history),
                      *items(body)]
    return given


def native(body: Body, model: Model) -> Body:
    """The client's request as an OpenAI upstream gets it: as written (a follow-up's
    history inline), under the upstream name."""
    return {**body, "model": model.upstream}


def checked(data: Body) -> Body:
    """An upstream's Response, passed on as it came once what gwc reads of it (and keeps
    for follow-ups, and replays) is there: output items, each an object with a type."""
    for i, item in enumerate(lst(data.get("output"), "output")):
        wire.text(obj(item, f"output[{i}]").get("type"), f"output[{i}].type")
    usage(data)
    return data


class Native(Decoder):
    """An upstream's Responses events passed on as they are, each checked; the stream
    ends at `response.completed` or `response.incomplete`, fails at `response.failed`
    or `error`."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def event(self, name: str, data: bytes) -> Body | None:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise Malformed(f"an event is not JSON ({exc})") from exc
        payload = obj(payload, "an event")
        kind = wire.text(payload.get("type"), "an event's type", name)
        if kind == "error" or kind == "response.failed":
            found = opt_obj(payload.get("response"), "response").get("error") or payload
            message, code = error_fields({"error": found})
            raise self.adapter.status_error(502, message, code)
        if kind == "response.created":
            self.started = True
        elif not self.started:
            raise Malformed(f"{kind} before response.created")
        elif kind in ("response.completed", "response.incomplete"):
            usage(obj(payload.get("response"), f"{kind}.response"))
            self.complete = self.ended = True
        return payload


# ---------------------------------------------------------- the pipeline's view

class Responses(Format):
    name = "responses"

    def usage(self, raw: Body) -> Body:
        try:
            return usage({"usage": raw}) or {}
        except Malformed:
            return {}

    def chunk_usage(self, chunk: Body) -> Body | None:
        if chunk.get("type") not in ("response.completed", "response.incomplete"):
            return None
        found = (chunk.get("response") or {}).get("usage")
        return found if isinstance(found, dict) else None

    def chunk_text(self, chunk: Body) -> int:
        if chunk.get("type") in ("response.output_text.delta",
                                 "response.function_call_arguments.delta"):
            delta = chunk.get("delta")
            return len(delta) if isinstance(delta, str) else 0
        return 0

    def frame(self, chunk: Body) -> bytes:
        return sse(chunk)

    def broken(self, error: GatewayError) -> bytes:
        return sse({"type": "error", "code": error.code, "message": error.message,
                    "param": None, "sequence_number": 0})

    def fresh(self, answer: Body) -> Body:
        return {**answer, "id": new_id(), "created_at": time.time()}

    async def replay(self, answer: Body, include_usage: bool) -> AsyncIterator[Body]:
        """As the API streams a Response: created and in progress, each output item
        added, its text or arguments in one delta, done; then completed."""
        sequence = iter(range(1 << 62))

        def event(kind: str, **fields: Any) -> Body:
            return {"type": kind, "sequence_number": next(sequence), **fields}

        begun = {**answer, "status": "in_progress", "output": [], "usage": None}
        yield event("response.created", response=begun)
        yield event("response.in_progress", response=begun)
        for index, item in enumerate(answer.get("output") or ()):
            kind = item.get("type")
            if kind == "message":
                yield event("response.output_item.added", output_index=index,
                            item={**item, "status": "in_progress", "content": []})
                for place, part in enumerate(item.get("content") or ()):
                    where = {"item_id": item.get("id"), "output_index": index,
                             "content_index": place}
                    yield event("response.content_part.added", **where,
                                part={**part, "text": ""} if "text" in part else part)
                    if part.get("type") == "output_text":
                        yield event("response.output_text.delta", **where,
                                    delta=part.get("text", ""), logprobs=[])
                        yield event("response.output_text.done", **where,
                                    text=part.get("text", ""), logprobs=[])
                    yield event("response.content_part.done", **where, part=part)
            elif kind == "function_call":
                yield event("response.output_item.added", output_index=index,
                            item={**item, "status": "in_progress", "arguments": ""})
                where = {"item_id": item.get("id"), "output_index": index}
                yield event("response.function_call_arguments.delta", **where,
                            delta=item.get("arguments", ""))
                yield event("response.function_call_arguments.done", **where,
                            arguments=item.get("arguments", ""))
            else:
                yield event("response.output_item.added", output_index=index, item=item)
            yield event("response.output_item.done", output_index=index, item=item)
        yield event(f"response.{answer.get('status') or 'completed'}", response=answer)

    def assembled(self, chunks: list[Body], usage: Body) -> Body | None:
        """The Response a completed stream's last event carries."""
        for event in reversed(chunks):
            if event.get("type") == "response.completed":
                found = event.get("response")
                return found if isinstance(found, dict) else None
        return None

    def said(self, answer: Body) -> Iterator[Slot]:
        output = answer.get("output")
        for item in output if isinstance(output, list) else ():
            if isinstance(item, dict) and item.get("type") == "message":
                yield from texts_of(item, "content")

    def delta(self, chunk: Body) -> Slot | None:
        if chunk.get("type") == "response.output_text.delta" \
                and isinstance(chunk.get("delta"), str):
            return chunk, "delta"
        return None

    def closes(self, chunk: Body) -> bool:
        return self.delta(chunk) is None

    def whole(self, chunk: Body) -> Iterator[Slot]:
        kind = chunk.get("type")
        if kind == "response.output_text.done" and isinstance(chunk.get("text"), str):
            yield chunk, "text"
        elif kind == "response.content_part.done":
            yield from texts_of({"content": [chunk.get("part")]}, "content")
        elif kind == "response.output_item.done":
            yield from self.said({"output": [chunk.get("item")]})
        elif kind in ("response.completed", "response.incomplete") \
                and isinstance(chunk.get("response"), dict):
            yield from self.said(chunk["response"])


def prompt(body: Body) -> Iterator[Slot]:
    """A Responses request's texts: its instructions and its input items' (a follow-up's
    stored history was guarded when it was sent)."""
    yield from texts_of(body, "instructions")
    given = body.get("input")
    if isinstance(given, str):
        yield body, "input"
    for item in given if isinstance(given, list) else ():
        yield from texts_of(item, "content")
        yield from texts_of(item, "output")


RESPONSES = Responses()
