"""Google's Gemini API (`generateContent`, `streamGenerateContent`, embeddings).

System and developer messages become `systemInstruction`; assistant turns are
role `model`; tool calls become `functionCall` parts and tool results
`functionResponse` parts (named after the call they answer, since Gemini
matches them by name); generation settings go to `generationConfig`; finish
reasons and `usageMetadata` are mapped back to OpenAI's terms, each candidate
its own choice. A prompt Gemini blocks (`promptFeedback.blockReason`) is a
content filter's refusal: status 400, code "content_filter".
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from compiler.compiled import Model, Timeouts
from runtime.errors import UpstreamError
from runtime.providers import chat
from runtime.providers.base import Adapter, Body, Decoder, error_fields
from runtime.providers.openai import expected_choices
from runtime.providers.wire import NUMBERS, Malformed, count, lst, obj, opt_lst, opt_obj, text

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
          "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
          "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
          "IMAGE_SAFETY": "content_filter", "MALFORMED_FUNCTION_CALL": "stop"}


def _parts(content: Any, where: str) -> list[Body]:
    parts: list[Body] = []
    for part in chat.parts(content, where):
        if part.url is None:
            parts.append({"text": part.text})
            continue
        inline = chat.data_url(part.url)
        if inline:
            parts.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
        else:
            parts.append({"fileData": {"fileUri": part.url}})
    return parts


def _result(content: Any, where: str) -> Body:
    """A tool's result as Gemini's `functionResponse.response`, which must be an object."""
    found = chat.text_of(content, where)
    try:
        result = orjson.loads(found)
    except orjson.JSONDecodeError:
        result = found
    return result if isinstance(result, dict) else {"result": result}


def to_request(body: Body) -> Body:
    """An OpenAI chat request as a Gemini `generateContent` request (a 400 for what cannot be)."""
    system: list[Body] = []
    contents: list[Body] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the results

    def add(role: str, parts: list[Body]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        elif parts:
            contents.append({"role": role, "parts": parts})

    for role, message, where in chat.messages(body):
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_parts(content, f"{where}.content"))
        elif role == "assistant":
            parts = _parts(content, f"{where}.content")
            for call in chat.tool_calls(message, where):
                names[call.id] = call.name
                parts.append({"functionCall": {"name": call.name, "args": call.arguments}})
            add("model", parts)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            name = names.get(call_id, "tool") if isinstance(call_id, str) else "tool"
            add("user", [{"functionResponse": {
                "name": name, "response": _result(content, f"{where}.content")}}])
        else:
            add("user", _parts(content, f"{where}.content"))
    request: Body = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    config: Body = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        value = chat.number(body, ours)
        if value is not None:
            config[theirs] = value
    for ours, theirs in (("max_tokens", "maxOutputTokens"),
                         ("max_completion_tokens", "maxOutputTokens"), ("n", "candidateCount")):
        whole = chat.integer(body, ours)
        if whole is not None:
            config[theirs] = whole
    stop = chat.stop(body)
    if stop:
        config["stopSequences"] = stop
    if config:
        request["generationConfig"] = config
    tools = chat.tools(body)
    if tools:
        request["tools"] = [{"functionDeclarations": [
            {"name": t.name, "description": t.description,
             **({"parameters": t.parameters} if t.parameters else {})} for t in tools]}]
    choice = chat.tool_choice(body)
    if choice in ("auto", "none", "required"):
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]
        request["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    elif choice:
        request["toolConfig"] = {"functionCallingConfig": {
            "mode": "ANY", "allowedFunctionNames": [choice.removeprefix("function:")]}}
    return request


def _usage(metadata: Body) -> Body:
    """Gemini's usage in OpenAI's terms: its thinking is output, as OpenAI's reasoning
    tokens are, and the cached part of the prompt is `cached_tokens`."""
    prompt = count(metadata.get("promptTokenCount"), "usageMetadata.promptTokenCount")
    answer = count(metadata.get("candidatesTokenCount"), "usageMetadata.candidatesTokenCount")
    thoughts = count(metadata.get("thoughtsTokenCount"), "usageMetadata.thoughtsTokenCount")
    cached = count(metadata.get("cachedContentTokenCount"),
                   "usageMetadata.cachedContentTokenCount")
    total = count(metadata.get("totalTokenCount"), "usageMetadata.totalTokenCount")
    out: Body = {"prompt_tokens": prompt, "completion_tokens": answer + thoughts,
                 "total_tokens": total or prompt + answer + thoughts}
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return out


def _choice(candidate: Any, where: str, calls_so_far: int
            ) -> tuple[int, str, list[Body], str | None]:
    """A candidate's index, its text, its function calls as OpenAI tool calls, and its
    finish reason."""
    candidate = obj(candidate, where)
    index = count(candidate.get("index"), f"{where}.index")
    content = opt_obj(candidate.get("content"), f"{where}.content")
    texts: list[str] = []
    calls: list[Body] = []
    for j, part in enumerate(opt_lst(content.get("parts"), f"{where}.content.parts")):
        here = f"{where}.content.parts[{j}]"
        part = obj(part, here)
        if "text" in part and not part.get("thought"):
            texts.append(text(part["text"], f"{here}.text"))
        if "functionCall" in part:
            call = obj(part["functionCall"], f"{here}.functionCall")
            number = calls_so_far + len(calls)
            calls.append({"index": number, "type": "function",
                          "id": text(call.get("id"), f"{here}.functionCall.id") or
                          f"call_{number}",
                          "function": {"name": text(call.get("name"), f"{here}.functionCall.name"),
                                       "arguments": orjson.dumps(opt_obj(
                                           call.get("args"), f"{here}.functionCall.args")
                                       ).decode()}})
    reason = text(candidate.get("finishReason"), f"{where}.finishReason", "") or None
    finish = None if reason is None else \
        "tool_calls" if calls and reason == "STOP" else FINISH.get(reason, "stop")
    return index, "".join(texts), calls, finish


def blocked(adapter: Adapter, data: Body) -> UpstreamError | None:
    """A prompt Gemini refused to answer, as the content filter's 400."""
    feedback = data.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if not isinstance(reason, str) or not reason:
        return None
    detail = feedback.get("blockReasonMessage") if isinstance(feedback, dict) else None
    message = f"the prompt was blocked: {reason}" + \
        (f" ({detail})" if isinstance(detail, str) and detail else "")
    return adapter.status_error(400, message, "content_filter")


def from_response(data: Body, model: Model, adapter: Adapter) -> Body:
    """A Gemini response as an OpenAI chat completion."""
    refusal = blocked(adapter, data)
    if refusal is not None:
        raise refusal
    candidates = opt_lst(data.get("candidates"), "candidates")
    if not candidates:
        raise Malformed("no candidates")
    choices: list[Body] = []
    for i, candidate in enumerate(candidates):
        index, found, calls, finish = _choice(candidate, f"candidates[{i}]", 0)
        message: Body = {"role": "assistant", "content": found or (None if calls else "")}
        if calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"}
                                     for c in calls]
        choices.append({"index": index, "message": message, "finish_reason": finish or "stop"})
    return {"id": text(data.get("responseId"), "responseId") or f"gemini-{time.monotonic_ns()}",
            "object": "chat.completion", "created": int(time.time()),
            "model": text(data.get("modelVersion"), "modelVersion", model.upstream),
            "choices": choices,
            "usage": _usage(opt_obj(data.get("usageMetadata"), "usageMetadata"))}


class Responses(Decoder):
    """Gemini's streamed responses as OpenAI chunks. The stream has no end marker but
    its finish reasons: one that ends without them is broken."""

    def __init__(self, adapter: Adapter, model: Model, choices: int) -> None:
        self.adapter = adapter
        self.base: Body = {"id": f"gemini-{time.monotonic_ns()}",
                           "object": "chat.completion.chunk", "created": int(time.time()),
                           "model": model.upstream}
        self.choices = choices
        self.usage: Body = {}
        self.calls = 0
        self.begun: set[int] = set()  # choices whose first delta (with the role) is out
        self.finished: set[int] = set()

    def event(self, name: str, data: bytes) -> Body | None:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise Malformed(f"an event is not JSON ({exc})") from exc
        if isinstance(payload, list) and len(payload) == 1:
            payload = payload[0]  # how errors come when the stream is not alt=sse
        payload = obj(payload, "an event")
        if "error" in payload:
            error = payload["error"]
            status = error.get("code") if isinstance(error, dict) else None
            message, code = error_fields(payload)
            raise self.adapter.status_error(
                status if isinstance(status, int) and 400 <= status <= 599 else 502,
                message, code)
        refusal = blocked(self.adapter, payload)
        if refusal is not None:
            raise refusal
        usage = opt_obj(payload.get("usageMetadata"), "usageMetadata")
        _usage(usage)
        read = []
        calls = self.calls
        for i, candidate in enumerate(opt_lst(payload.get("candidates"), "candidates")):
            read.append(_choice(candidate, f"candidates[{i}]", calls))
            calls += len(read[-1][2])
        ident = text(payload.get("responseId"), "responseId")
        # the event is whole: only now does it change the stream's state
        self.calls = calls
        choices: list[Body] = []
        for index, found, tool_calls, finish in read:
            delta: Body = {} if index in self.begun else {"role": "assistant"}
            self.begun.add(index)
            if found:
                delta["content"] = found
            if tool_calls:
                delta["tool_calls"] = tool_calls
            if finish is not None:
                self.finished.add(index)
            choices.append({"index": index, "delta": delta, "finish_reason": finish})
        self.usage.update(usage)
        self.base["id"] = ident or self.base["id"]
        if not choices:
            return None
        self.started = True
        self.complete = len(self.finished) >= self.choices
        return {**self.base, "choices": choices}

    def end(self) -> Body | None:
        return {**self.base, "choices": [], "usage": _usage(self.usage)}


class Gemini(Adapter):
    default_base_url = "https://generativelanguage.googleapis.com/v1"  # as google-genai uses

    def auth(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key} if self.api_key else {}

    def url(self, model: Model, method: str) -> str:
        return f"{self.base_url}/models/{model.upstream}:{method}"

    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        return await self.post_json(self.url(model, "generateContent"), to_request(body),
                                    timeouts, lambda data: from_response(data, model, self))

    def stream(self, model: Model, body: Body, timeouts: Timeouts) -> AsyncIterator[Body]:
        return self.events(self.url(model, "streamGenerateContent") + "?alt=sse",
                           lambda: to_request(body), timeouts,
                           Responses(self, model, expected_choices(body)))

    async def embed(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        inputs = body.get("input")
        texts = [str(x) for x in (inputs if isinstance(inputs, list) else [inputs])]
        request = {"requests": [{"model": f"models/{model.upstream}",
                                 "content": {"parts": [{"text": t}]}} for t in texts]}

        def read(data: Body) -> Body:
            vectors = []
            for i, item in enumerate(lst(data.get("embeddings"), "embeddings")):
                values = lst(obj(item, f"embeddings[{i}]").get("values"),
                             f"embeddings[{i}].values")
                if not all(type(v) in NUMBERS for v in values):
                    raise Malformed(f"embeddings[{i}].values holds a non-number")
                vectors.append(values)
            tokens = sum(len(t.split()) for t in texts)
            return {"object": "list", "model": model.upstream,
                    "data": [{"object": "embedding", "index": i, "embedding": v}
                             for i, v in enumerate(vectors)],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return await self.post_json(self.url(model, "batchEmbedContents"), request, timeouts,
                                    read)
