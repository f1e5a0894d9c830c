"""OpenAI and everything that speaks its API: vLLM, Groq, Together, Ollama, Mistral,
DeepSeek (`openai_compatible`), and Azure OpenAI's deployment URLs (`azure`).

Requests and answers pass through as they are; answers are checked for the
fields the gateway reads (`choices`, `usage`) before they are passed on.
`openai` itself also takes a Responses request as the client wrote it
(runtime/formats/responses.py has its events' reader).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from compiler.compiled import Model, Timeouts
from runtime.errors import UpstreamError
from runtime.formats import responses
from runtime.providers.base import Adapter, Body, Decoder, error_fields
from runtime.providers.wire import Malformed, openai_usage


def read_completion(data: Body) -> Body:
    """A chat completion, checked for what the gateway reads of it."""
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise Malformed("choices is missing or not a list")
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            raise Malformed(f"choices[{i}] has no message object")
    openai_usage(data.get("usage"))
    return data


def read_embeddings(data: Body) -> Body:
    items = data.get("data")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise Malformed("data is missing or not a list of objects")
    openai_usage(data.get("usage"))
    return data


def expected_choices(body: Body) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128 else 1


class Chunks(Decoder):
    """OpenAI's chunks as they come, checked; `[DONE]` is the end marker."""

    def __init__(self, adapter: Adapter, choices: int, usage_asked: bool) -> None:
        self.adapter = adapter
        self.choices = choices
        self.usage_asked = usage_asked
        self.usage_seen = False
        self.finished: set[int] = set()

    def event(self, name: str, data: bytes) -> Body | None:
        if data == b"[DONE]":
            self.ended = True
            return None
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise Malformed(f"an event is not JSON ({exc})") from exc
        if not isinstance(chunk, dict):
            raise Malformed("an event is not a JSON object")
        if "error" in chunk or name == "error" or chunk.get("object") == "error":
            raise stream_failure(self.adapter, chunk)
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise Malformed("a chunk's choices is missing or not a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise Malformed("a chunk's choice is not an object")
            index = choice.get("index", 0)
            delta = choice.get("delta")
            if isinstance(index, bool) or not isinstance(index, int) or \
                    not (delta is None or isinstance(delta, dict)):
                raise Malformed("a chunk's choice has a bad index or delta")
            if choice.get("finish_reason") is not None:
                self.finished.add(index)
        usage = chunk.get("usage")
        if usage is not None:
            openai_usage(usage)
            self.usage_seen = True
        self.started = True
        if len(self.finished) >= self.choices and (self.usage_seen or not self.usage_asked):
            self.complete = True
        return chunk


def stream_failure(adapter: Adapter, data: Body) -> UpstreamError:
    """An error reported inside a stream: its own status where it gives one, else 502."""
    error = data.get("error")
    status = next((c for c in (error.get("status"), error.get("code")) if isinstance(c, int)
                   and not isinstance(c, bool) and 400 <= c <= 599), 502) \
        if isinstance(error, dict) else 502
    message, code = error_fields(data)
    return adapter.status_error(status, message, code)


class OpenAI(Adapter):
    default_base_url = "https://api.openai.com/v1"

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def url(self, model: Model, path: str) -> str:
        return f"{self.base_url}/{path}"

    def payload(self, model: Model, body: Body) -> Body:
        payload = {**body, "model": model.upstream}
        if model.prefill and self.provider.type == "openai_compatible" and _prefilled(body):
            # vLLM's way, which the OpenAI-compatible servers that continue a prefix follow
            payload.setdefault("continue_final_message", True)
            payload.setdefault("add_generation_prompt", False)
        return payload

    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        payload = {**self.payload(model, body), "stream": False}
        return await self.post_json(self.url(model, "chat/completions"), payload, timeouts,
                                    read_completion)

    def stream(self, model: Model, body: Body, timeouts: Timeouts) -> AsyncIterator[Body]:
        payload = {**self.payload(model, body), "stream": True}
        if self.provider.type == "openai":  # compatible servers do not all take it
            payload["stream_options"] = {**_object(body.get("stream_options")),
                                         "include_usage": True}
        asked = bool(_object(payload.get("stream_options")).get("include_usage"))
        return self.events(self.url(model, "chat/completions"), lambda: payload, timeouts,
                           Chunks(self, expected_choices(body), asked))

    async def embed(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        return await self.post_json(self.url(model, "embeddings"), self.payload(model, body),
                                    timeouts, read_embeddings)

    @property
    def speaks_responses(self) -> bool:
        """OpenAI's own API serves Responses; an OpenAI-compatible server may not."""
        return self.provider.type == "openai"

    async def respond(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        payload = {**responses.native(body, model), "stream": False}
        return await self.post_json(self.url(model, "responses"), payload, timeouts,
                                    responses.checked)

    def respond_stream(self, model: Model, body: Body, timeouts: Timeouts
                       ) -> AsyncIterator[Body]:
        payload = {**responses.native(body, model), "stream": True}
        return self.events(self.url(model, "responses"), lambda: payload, timeouts,
                           responses.Native(self))


def _object(value: Any) -> Body:
    return value if isinstance(value, dict) else {}


def _prefilled(body: Body) -> bool:
    """Whether the conversation ends with the assistant's own message, to be continued."""
    messages = body.get("messages")
    return isinstance(messages, list) and bool(messages) and isinstance(messages[-1], dict) \
        and messages[-1].get("role") == "assistant"


class Azure(OpenAI):
    """Deployment URLs, an `api-version` query and the `api-key` header.

    The model's `name` is the deployment's name; the body's `model` is dropped,
    since the deployment decides it.
    """

    default_api_version = "2024-10-21"

    def auth(self) -> dict[str, str]:
        return {"api-key": self.api_key} if self.api_key else {}

    def url(self, model: Model, path: str) -> str:
        version = self.provider.api_version or self.default_api_version
        return f"{self.base_url}/openai/deployments/{model.upstream}/{path}?api-version={version}"

    def payload(self, model: Model, body: Body) -> Body:
        return {k: v for k, v in body.items() if k != "model"}

    def health_url(self, model: Model) -> str:
        """Azure lists models, not deployments, so the check asks for the list."""
        version = self.provider.api_version or self.default_api_version
        return f"{self.base_url}/openai/models?api-version={version}"

