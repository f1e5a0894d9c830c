"""Anthropic's Messages API as a provider: the conversions are runtime/formats/messages.py.

A chat request is translated to a Messages request and its answer back; a
Messages request (`POST /v1/messages`) goes as the client wrote it, with the
client's `anthropic-version` and `anthropic-beta`, and its answer comes back
untouched. The key is sent as `x-api-key` and as `Authorization: Bearer`,
since both are seen in front of Anthropic-compatible endpoints.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from compiler.compiled import Model, Timeouts
from runtime.formats import messages
from runtime.providers.base import Adapter, Body


class Anthropic(Adapter):
    default_base_url = "https://api.anthropic.com"

    def auth(self) -> dict[str, str]:
        headers = {"anthropic-version": messages.VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def health_url(self, model: Model) -> str:
        return f"{self.base_url}/v1/models/{model.upstream}"

    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        return await self.post_json(f"{self.base_url}/v1/messages",
                                    messages.request(body, model), timeouts,
                                    lambda data: messages.chat_answer(data, model))

    def stream(self, model: Model, body: Body, timeouts: Timeouts) -> AsyncIterator[Body]:
        return self.events(f"{self.base_url}/v1/messages",
                           lambda: {**messages.request(body, model), "stream": True}, timeouts,
                           messages.Events(self, model))

    async def native(self, model: Model, body: Body, timeouts: Timeouts,
                     headers: Mapping[str, str]) -> Body:
        return await self.post_json(f"{self.base_url}/v1/messages",
                                    messages.native(body, model), timeouts, messages.checked,
                                    headers)

    def native_stream(self, model: Model, body: Body, timeouts: Timeouts,
                      headers: Mapping[str, str]) -> AsyncIterator[Body]:
        return self.events(f"{self.base_url}/v1/messages",
                           lambda: {**messages.native(body, model), "stream": True}, timeouts,
                           messages.Native(self), headers)

    async def count_tokens(self, model: Model, body: Body, timeouts: Timeouts,
                           headers: Mapping[str, str]) -> Body:
        payload = {k: v for k, v in messages.native(body, model).items() if k != "stream"}
        return await self.post_json(f"{self.base_url}/v1/messages/count_tokens", payload,
                                    timeouts, messages.counted, headers)
