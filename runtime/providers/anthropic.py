"""Anthropic's Messages API, spoken on behalf of OpenAI-shaped requests.

System and developer messages become the top-level `system`; `max_tokens`,
which Anthropic requires, comes from the request or else the model's
`max_output`; tool definitions, tool calls and tool results are translated
both ways; stop reasons and usage are mapped; stream events become OpenAI
chunks. The key is sent as `x-api-key` and as `Authorization: Bearer`, since
both are seen in front of Anthropic-compatible endpoints.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from compiler.policy import Model
from runtime.errors import UpstreamError
from runtime.providers.base import Adapter, Body, Timeouts

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
          "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}
OVERLOADED = 529  # Anthropic's status for an overloaded API: a 5xx for retries


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _blocks(content: Any) -> list[Body]:
    """OpenAI content parts as Anthropic content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Body] = []
    for part in content or []:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                blocks.append({"type": "image", "source": {"type": "base64",
                                                           "media_type": media, "data": data}})
            else:
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
    return blocks


def to_messages(body: Body, model: Model) -> Body:
    """An OpenAI chat request as an Anthropic Messages request."""
    system: list[str] = []
    messages: list[Body] = []

    def add(role: str, blocks: list[Body]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for message in body.get("messages", []):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
        elif role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""),
                          "content": _text_of(message.get("content"))}])
        elif role == "assistant":
            blocks = _blocks(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    arguments = {}
                blocks.append({"type": "tool_use", "id": call.get("id", ""),
                               "name": function.get("name", ""), "input": arguments})
            add("assistant", blocks)
        else:
            add("user", _blocks(message.get("content")))
    request: Body = {
        "model": model.upstream,
        "messages": messages,
        "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens")
        or model.max_output or DEFAULT_MAX_TOKENS,
    }
    if system:
        request["system"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        request["temperature"] = min(float(body["temperature"]), 1.0)  # Anthropic's range
    if body.get("top_p") is not None:
        request["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        request["tools"] = [{"name": t["function"]["name"],
                             "description": t["function"].get("description", ""),
                             "input_schema": t["function"].get("parameters")
                             or {"type": "object", "properties": {}}}
                            for t in body["tools"] if t.get("type") == "function"]
    choice = body.get("tool_choice")
    if choice == "required":
        request["tool_choice"] = {"type": "any"}
    elif choice in ("auto", "none"):
        request["tool_choice"] = {"type": choice}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        request["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
    if body.get("user"):
        request["metadata"] = {"user_id": str(body["user"])}
    return request


def _usage(usage: Body) -> Body:
    prompt = int(usage.get("input_tokens") or 0) + \
        int(usage.get("cache_creation_input_tokens") or 0) + \
        int(usage.get("cache_read_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def from_message(data: Body, model: Model) -> Body:
    """An Anthropic message as an OpenAI chat completion."""
    text = "".join(b.get("text", "") for b in data.get("content", []) if b.get("type") == "text")
    calls = [{"id": b.get("id", ""), "type": "function",
              "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input", {}))}}
             for b in data.get("content", []) if b.get("type") == "tool_use"]
    message: Body = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": data.get("id", ""), "object": "chat.completion", "created": int(time.time()),
        "model": data.get("model", model.upstream),
        "choices": [{"index": 0, "message": message,
                     "finish_reason": FINISH.get(data.get("stop_reason") or "", "stop")}],
        "usage": _usage(data.get("usage", {})),
    }


class Anthropic(Adapter):
    default_base_url = "https://api.anthropic.com"

    def auth(self) -> dict[str, str]:
        headers = {"anthropic-version": VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        data = await self.post_json(f"{self.base_url}/v1/messages", to_messages(body, model),
                                    timeouts)
        return from_message(data, model)

    async def stream(self, model: Model, body: Body, timeouts: Timeouts) -> AsyncIterator[Body]:
        request = {**to_messages(body, model), "stream": True}
        base: Body = {"id": "", "object": "chat.completion.chunk", "created": int(time.time()),
                      "model": model.upstream}
        usage: Body = {}
        tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index

        def chunk(delta: Body, finish: str | None = None) -> Body:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        async for event, data in self.sse(f"{self.base_url}/v1/messages", request, timeouts):
            payload = json.loads(data)
            kind = payload.get("type", event)
            if kind == "message_start":
                message = payload.get("message", {})
                base["id"] = message.get("id", "")
                base["model"] = message.get("model", model.upstream)
                usage.update(message.get("usage", {}))
                yield chunk({"role": "assistant", "content": ""})
            elif kind == "content_block_start":
                block = payload.get("content_block", {})
                if block.get("type") == "tool_use":
                    tools[payload["index"]] = len(tools)
                    yield chunk({"tool_calls": [{
                        "index": tools[payload["index"]], "id": block.get("id", ""),
                        "type": "function",
                        "function": {"name": block.get("name", ""), "arguments": ""}}]})
                elif block.get("text"):
                    yield chunk({"content": block["text"]})
            elif kind == "content_block_delta":
                delta = payload.get("delta", {})
                if delta.get("type") == "text_delta":
                    yield chunk({"content": delta.get("text", "")})
                elif delta.get("type") == "input_json_delta":
                    yield chunk({"tool_calls": [{
                        "index": tools.get(payload["index"], 0),
                        "function": {"arguments": delta.get("partial_json", "")}}]})
            elif kind == "message_delta":
                usage.update(payload.get("usage", {}))
                reason = (payload.get("delta") or {}).get("stop_reason") or ""
                yield chunk({}, FINISH.get(reason, "stop"))
            elif kind == "message_stop":
                yield {**base, "choices": [], "usage": _usage(usage)}
                return
            elif kind == "error":
                error = payload.get("error", {})
                status = OVERLOADED if error.get("type") == "overloaded_error" else 502
                raise UpstreamError("status", f"{self.provider.name}: "
                                              f"{error.get('message', 'stream error')}",
                                    status=status)
        raise UpstreamError("connect", f"{self.provider.name}: stream ended without "
                                       "message_stop")
