"""Google's Gemini API (`generateContent`, `streamGenerateContent`, embeddings).

System and developer messages become `systemInstruction`; assistant turns are
role `model`; tool calls become `functionCall` parts and tool results
`functionResponse` parts (named after the call they answer, since Gemini
matches them by name); generation settings go to `generationConfig`; finish
reasons and `usageMetadata` are mapped back to OpenAI's terms.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from compiler.policy import Model
from runtime.errors import UpstreamError
from runtime.providers.base import Adapter, Body, Timeouts

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
          "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
          "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
          "IMAGE_SAFETY": "content_filter"}


def _parts(content: Any) -> list[Body]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[Body] = []
    for part in content or []:
        if part.get("type") == "text":
            parts.append({"text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:") and ";base64," in url:
                mime, data = url[5:].split(";base64,", 1)
                parts.append({"inlineData": {"mimeType": mime, "data": data}})
            else:
                parts.append({"fileData": {"fileUri": url}})
    return parts


def to_request(body: Body) -> Body:
    """An OpenAI chat request as a Gemini `generateContent` request."""
    system: list[Body] = []
    contents: list[Body] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the results

    def add(role: str, parts: list[Body]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        elif parts:
            contents.append({"role": role, "parts": parts})

    for message in body.get("messages", []):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(message.get("content")))
        elif role == "assistant":
            parts = _parts(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                names[call.get("id", "")] = function.get("name", "")
                try:
                    args = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    args = {}
                parts.append({"functionCall": {"name": function.get("name", ""), "args": args}})
            add("model", parts)
        elif role == "tool":
            content = message.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            try:
                result = json.loads(text)
            except ValueError:
                result = text
            response = result if isinstance(result, dict) else {"result": result}
            add("user", [{"functionResponse": {
                "name": names.get(message.get("tool_call_id", ""), "tool"),
                "response": response}}])
        else:
            add("user", _parts(message.get("content")))
    request: Body = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    config: Body = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"),
                         ("max_tokens", "maxOutputTokens"),
                         ("max_completion_tokens", "maxOutputTokens"), ("n", "candidateCount")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        request["generationConfig"] = config
    if body.get("tools"):
        request["tools"] = [{"functionDeclarations": [
            {"name": t["function"]["name"], "description": t["function"].get("description", ""),
             **({"parameters": t["function"]["parameters"]} if t["function"].get("parameters")
                else {})}
            for t in body["tools"] if t.get("type") == "function"]}]
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required"):
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]
        request["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        request["toolConfig"] = {"functionCallingConfig": {
            "mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}}
    return request


def _usage(metadata: Body) -> Body:
    prompt = int(metadata.get("promptTokenCount") or 0)
    completion = int(metadata.get("candidatesTokenCount") or 0) + \
        int(metadata.get("thoughtsTokenCount") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": int(metadata.get("totalTokenCount") or prompt + completion)}


def _choice(candidate: Body, calls_so_far: int) -> tuple[str, list[Body], str | None]:
    """A candidate's text, its function calls as OpenAI tool calls, its finish reason."""
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(p.get("text", "") for p in parts if "text" in p and not p.get("thought"))
    calls = [{"index": calls_so_far + i, "id": p["functionCall"].get("id") or
              f"call_{calls_so_far + i}", "type": "function",
              "function": {"name": p["functionCall"].get("name", ""),
                           "arguments": json.dumps(p["functionCall"].get("args", {}))}}
             for i, p in enumerate(x for x in parts if "functionCall" in x)]
    reason = candidate.get("finishReason")
    finish = None if reason is None else \
        "tool_calls" if calls and reason == "STOP" else FINISH.get(reason, "stop")
    return text, calls, finish


def from_response(data: Body, model: Model) -> Body:
    candidates = data.get("candidates") or []
    if not candidates:
        reason = (data.get("promptFeedback") or {}).get("blockReason", "no candidates")
        raise UpstreamError("status", f"gemini returned no answer: {reason}", status=400)
    text, calls, finish = _choice(candidates[0], 0)
    message: Body = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    return {"id": data.get("responseId", f"gemini-{time.monotonic_ns()}"),
            "object": "chat.completion", "created": int(time.time()),
            "model": data.get("modelVersion", model.upstream),
            "choices": [{"index": 0, "message": message, "finish_reason": finish or "stop"}],
            "usage": _usage(data.get("usageMetadata", {}))}


class Gemini(Adapter):
    default_base_url = "https://generativelanguage.googleapis.com/v1"  # as google-genai uses

    def auth(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key} if self.api_key else {}

    def url(self, model: Model, method: str) -> str:
        return f"{self.base_url}/models/{model.upstream}:{method}"

    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        data = await self.post_json(self.url(model, "generateContent"), to_request(body), timeouts)
        return from_response(data, model)

    async def stream(self, model: Model, body: Body, timeouts: Timeouts) -> AsyncIterator[Body]:
        base: Body = {"id": f"gemini-{time.monotonic_ns()}", "object": "chat.completion.chunk",
                      "created": int(time.time()), "model": model.upstream}
        usage: Body = {}
        calls = 0
        first = True
        finished = False
        async for _, data in self.sse(self.url(model, "streamGenerateContent") + "?alt=sse",
                                      to_request(body), timeouts):
            payload = json.loads(data)
            if "error" in payload:
                raise UpstreamError("status", f"{self.provider.name}: "
                                              f"{payload['error'].get('message', 'stream error')}",
                                    status=int(payload["error"].get("code") or 502))
            usage.update(payload.get("usageMetadata") or {})
            base["id"] = payload.get("responseId", base["id"])
            for candidate in payload.get("candidates") or []:
                text, tool_calls, finish = _choice(candidate, calls)
                calls += len(tool_calls)
                finished = finished or finish is not None
                delta: Body = {"role": "assistant"} if first else {}
                first = False
                if text:
                    delta["content"] = text
                if tool_calls:
                    delta["tool_calls"] = tool_calls
                yield {**base, "choices": [{"index": 0, "delta": delta,
                                            "finish_reason": finish}]}
        if not finished:  # Gemini's stream has no end marker but the finish reason
            raise UpstreamError("connect", f"{self.provider.name}: stream ended unfinished")
        yield {**base, "choices": [], "usage": _usage(usage)}

    async def embed(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        inputs = body.get("input")
        texts = [str(x) for x in (inputs if isinstance(inputs, list) else [inputs])]
        request = {"requests": [{"model": f"models/{model.upstream}",
                                 "content": {"parts": [{"text": t}]}} for t in texts]}
        data = await self.post_json(self.url(model, "batchEmbedContents"), request, timeouts)
        vectors = [e.get("values", []) for e in data.get("embeddings", [])]
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "model": model.upstream,
                "data": [{"object": "embedding", "index": i, "embedding": v}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
