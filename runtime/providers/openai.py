"""OpenAI and everything that speaks its API: vLLM, Groq, Together, Ollama, Mistral,
DeepSeek (`openai_compatible`), and Azure OpenAI's deployment URLs (`azure`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from compiler.policy import Model
from runtime.errors import UpstreamError
from runtime.providers.base import Adapter, Body, Timeouts


class OpenAI(Adapter):
    default_base_url = "https://api.openai.com/v1"

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def url(self, model: Model, path: str) -> str:
        return f"{self.base_url}/{path}"

    def payload(self, model: Model, body: Body) -> Body:
        return {**body, "model": model.upstream}

    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        payload = {**self.payload(model, body), "stream": False}
        return await self.post_json(self.url(model, "chat/completions"), payload, timeouts)

    async def stream(self, model: Model, body: Body, timeouts: Timeouts) -> AsyncIterator[Body]:
        payload = {**self.payload(model, body), "stream": True}
        if self.provider.type == "openai":  # compatible servers do not all take it
            payload["stream_options"] = {"include_usage": True}
        async for _, data in self.sse(self.url(model, "chat/completions"), payload, timeouts):
            if data == "[DONE]":
                return
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError("connect", f"{self.provider.name}: bad stream data") from exc
            if "error" in chunk:
                raise UpstreamError("status", f"{self.provider.name}: "
                                              f"{chunk['error'].get('message', 'stream error')}",
                                    status=502)
            yield chunk
        raise UpstreamError("connect", f"{self.provider.name}: stream ended without [DONE]")

    async def embed(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        return await self.post_json(self.url(model, "embeddings"), self.payload(model, body),
                                    timeouts)


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
