"""What every provider adapter offers the gateway, in OpenAI's terms.

An adapter takes an OpenAI-shaped request body and a model, calls its
upstream in that upstream's own wire format, and answers in OpenAI's shape:
a chat completion, a stream of chat completion chunks, or embeddings. Its
upstream's failures leave it as `UpstreamError`, nothing else.
"""

from __future__ import annotations

import abc
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from compiler.policy import EnvValue, Model, Provider
from policies.backoff import parse_retry_after
from runtime.errors import UpstreamError

Body = dict[str, Any]


def resolve(value: str | EnvValue | None, env: dict[str, str]) -> str | None:
    """A setting's value, reading `env("NAME")` from the gateway's environment."""
    if isinstance(value, EnvValue):
        return env.get(value.env, value.default)
    return value


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The bounds on one upstream call, in seconds.

    - `connect`: opening the connection (both kinds of call);
    - `first_byte`: a stream's response headers and its first event;
    - `idle`: the longest gap between two events of a stream;
    - `total`: a whole non-streamed call. Its first byte is the whole answer
      (an upstream sends nothing until it is done), so it has no other bound;
      a stream has no total, so a long generation is never cut while it flows.
    """

    connect: float
    first_byte: float
    idle: float
    total: float

    def client(self) -> aiohttp.ClientTimeout:
        return _client_timeout(self.total, self.connect)


@functools.lru_cache(maxsize=256)
def _client_timeout(total: float, connect: float) -> aiohttp.ClientTimeout:
    """One aiohttp timeout object per distinct setting, not one per request."""
    return aiohttp.ClientTimeout(total=total, connect=connect)


class Adapter(abc.ABC):
    def __init__(self, provider: Provider, session: aiohttp.ClientSession | None,
                 env: dict[str, str]) -> None:
        self.provider = provider
        self.session = session
        self.env = env
        self.api_key = resolve(provider.api_key, env)
        self.base_url = (resolve(provider.base_url, env) or self.default_base_url).rstrip("/")
        headers = {k: resolve(v, env) or "" for k, v in provider.headers.items()}
        # built once: the same for every call this adapter makes
        self.request_headers = {"content-type": "application/json", **headers, **self.auth()}

    default_base_url = ""

    def auth(self) -> dict[str, str]:
        """The headers that carry this provider's credentials."""
        return {}

    @abc.abstractmethod
    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        """One chat completion, in OpenAI's response shape."""

    @abc.abstractmethod
    def stream(self, model: Model, body: Body, timeouts: Timeouts) -> AsyncIterator[Body]:
        """Chat completion chunks, in OpenAI's shape, as they arrive."""

    async def embed(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        raise UpstreamError("status", f"provider '{self.provider.name}' has no embeddings",
                            status=400)

    # --------------------------------------------------------------- HTTP

    async def post(self, url: str, payload: Body, timeouts: Timeouts) -> aiohttp.ClientResponse:
        """POST JSON; a non-2xx answer, a timeout or a refused connection raises."""
        assert self.session is not None
        try:
            response = await self.session.post(url, data=orjson.dumps(payload),
                                               timeout=timeouts.client(),
                                               headers=self.request_headers)
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"{self.provider.name}: no answer within "
                                           f"{timeouts.total:g}s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("connect", f"{self.provider.name}: {exc}") from exc
        if response.status >= 400:
            text = await response.text()
            response.release()
            raise UpstreamError("status", f"{self.provider.name} answered {response.status}: "
                                          f"{_error_message(text)}", status=response.status,
                                retry_after=parse_retry_after(response.headers.get("retry-after")))
        return response

    async def post_json(self, url: str, payload: Body, timeouts: Timeouts) -> Body:
        response = await self.post(url, payload, timeouts)
        try:
            async with response:
                data = orjson.loads(await response.read())
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"{self.provider.name}: answer cut off") from exc
        except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise UpstreamError("connect", f"{self.provider.name}: bad answer: {exc}") from exc
        if not isinstance(data, dict):
            raise UpstreamError("connect", f"{self.provider.name}: bad answer: not a JSON object")
        return data

    async def sse(self, url: str, payload: Body,
                  timeouts: Timeouts) -> AsyncIterator[tuple[str, str]]:
        """(event, data) pairs of a server-sent event stream."""
        response = await self.post(url, payload, timeouts)
        event, data = "", list[str]()
        try:
            async with response:
                async for raw in response.content:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if not line:
                        if data:
                            yield event, "\n".join(data)
                        event, data = "", list[str]()
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].lstrip())
                if data:
                    yield event, "\n".join(data)
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"{self.provider.name}: stream stalled") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("connect", f"{self.provider.name}: stream broke: {exc}") from exc


def _json_or_none(text: str) -> Body | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _error_message(text: str) -> str:
    """The upstream's own error message where it gives one in a known shape."""
    data = _json_or_none(text)
    if data:
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return text[:200]
