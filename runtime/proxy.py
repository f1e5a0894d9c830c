"""The proxied routes, `/v1/chat/completions` and `/v1/embeddings`, as bare ASGI apps.

These two carry nearly all of a gateway's traffic, so they read the ASGI
scope and messages themselves instead of through Starlette's Request and
Response, and `FastLane` hands them their POSTs before Starlette's middleware
and router (docs/gateway.md has the figures). So that the answer is the same
either way, a proxy answers its own errors: each in OpenAI's shape with the
`x-gw-*` headers, an unexpected one as a logged 500, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.errors import GatewayError, UpstreamError
from runtime.gateway import Answer, Gateway, Loaded, cost
from runtime.hangups import Hangups

MAX_BODY_BYTES = 8 * 1024 * 1024
logger = logging.getLogger("gwc")

Endpoint = Callable[[Loaded, Any, dict[str, str]], Awaitable[Answer]]


class StreamBroken(Exception):
    """Raised after the error event of a stream that failed mid-way: it makes the
    server drop the connection, so no client mistakes the stream for complete."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request as the HTTP layer tracks it, with the policy version that serves it
    (the snapshot taken when it arrived, whatever reloads come while it runs)."""

    request_id: str
    path: str
    started: float
    version: str


def new_request_id() -> str:
    return f"{random.getrandbits(128):032x}"  # unique, not secret


def stamp(exchange: Exchange, answer: Answer | None = None,
          spent: float | None = None) -> list[tuple[bytes, bytes]]:
    """The `x-gw-*` headers of a proxied answer, encoded for ASGI."""
    headers = [(b"x-gw-request-id", exchange.request_id.encode()),
               (b"x-gw-policy", exchange.version.encode())]
    if answer is not None:
        headers += [(b"x-gw-model", answer.model.name.encode()),
                    (b"x-gw-provider", answer.model.provider.encode()),
                    (b"x-gw-attempts", b"%d" % answer.tried()), (b"x-gw-cache", b"bypass")]
    if spent is not None:
        headers.append((b"x-gw-cost", b"%.8f" % spent))
    return headers


async def send_json(send: Send, status: int, content: bytes,
                    headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(content)),
        *headers]})
    await send({"type": "http.response.body", "body": content})


def error_headers(error: GatewayError, exchange: Exchange) -> list[tuple[bytes, bytes]]:
    return [*((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
            *stamp(exchange)]


async def read_json(headers: Mapping[str, str], receive: Receive, limit: int) -> Any:
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"the request body is over {limit} bytes", "body_too_large")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(499, "the client closed the connection", "client_closed")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"the request body is over {limit} bytes", "body_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"the request body is not JSON: {exc}", "invalid_json") from exc


class Proxy:
    """One proxied route: the request read, the gateway's pipeline run, the answer sent."""

    def __init__(self, gateway: Gateway, endpoint: Endpoint, hangups: Hangups,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.hangups = hangups
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loaded = self.gateway.current  # this request's policy, whatever reloads come
        exchange = Exchange(new_request_id(), scope["path"], time.monotonic(),
                            loaded.version if loaded else "")
        try:
            if loaded is None:
                raise GatewayError(503, "no policy loaded", "not_ready")
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            body = await read_json(headers, receive, self.max_body)
            answer = await self.hangups.guard(receive, self.endpoint(loaded, body, headers))
            if answer.body is not None:
                usage = answer.body.get("usage") or {}
                spent = cost(answer.model, usage)
                content = orjson.dumps(answer.body)
                self.finish(exchange, 200, answer, usage, spent)
        except GatewayError as error:
            self.finish(exchange, error.status, None, None, error=error.message)
            await send_json(send, error.status, orjson.dumps(error.body()),
                            error_headers(error, exchange))
            return
        except Exception as exc:  # a bug of ours: the client gets a 500, the log the traceback
            logger.exception("unexpected error", exc_info=exc)
            internal = GatewayError(500, "internal error in the gateway", "internal")
            self.finish(exchange, 500, None, None, error=internal.message)
            await send_json(send, 500, orjson.dumps(internal.body()), stamp(exchange))
            return
        if answer.body is None:
            response = StreamingResponse(self.stream(exchange, answer),
                                         media_type="text/event-stream",
                                         headers={"cache-control": "no-cache"})
            response.raw_headers += stamp(exchange, answer)
            await response(scope, receive, send)
            return
        await send_json(send, 200, content, stamp(exchange, answer, spent))

    async def stream(self, exchange: Exchange, answer: Answer) -> AsyncIterator[bytes]:
        assert answer.first is not None and answer.rest is not None
        usage: dict[str, Any] = {}
        status, error = 200, None
        try:
            chunk: dict[str, Any] | None = answer.first
            while chunk is not None:
                usage.update(chunk.get("usage") or {})
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                chunk = await anext(answer.rest, None)
            yield b"data: [DONE]\n\n"
        except UpstreamError as failure:
            status, error = 502, failure.message
            event = GatewayError(502, f"the stream broke after it began: {failure.message}",
                                 "stream_interrupted").body()
            yield b"data: " + orjson.dumps(event) + b"\n\n"
            raise StreamBroken(failure.message) from failure
        except asyncio.CancelledError:
            status, error = 499, "the client closed the connection"
            raise
        finally:
            await answer.rest.aclose()  # type: ignore[attr-defined]
            self.finish(exchange, status, answer, usage, cost(answer.model, usage), error)

    def finish(self, exchange: Exchange, status: int, answer: Answer | None,
               usage: Mapping[str, Any] | None, spent: float | None = None,
               error: str | None = None) -> None:
        """The request's metrics and its access log line."""
        seconds = time.monotonic() - exchange.started
        metrics = self.gateway.metrics
        line = {"request_id": exchange.request_id, "path": exchange.path, "status": status,
                "ms": int(seconds * 100_000) / 100,  # round() is several times slower
                "model": None, "provider": None, "rule": None, "attempts": None,
                "tokens": usage or None, "cost": spent if usage else None,
                "policy": exchange.version, "error": error}
        if answer is None:
            metrics.requests.add(("", "", "", str(status), "bypass"))
            metrics.latency.observe(("",), seconds)
        else:
            model, provider, rule = answer.model.name, answer.model.provider, answer.rule
            metrics.requests.add((rule, model, provider, str(status), "bypass"))
            metrics.latency.observe((rule,), seconds)
            line.update(model=model, provider=provider, rule=rule, attempts=[
                {"model": a.model, "outcome": a.outcome} for a in answer.attempts])
            if usage:
                metrics.tokens.add((model, "prompt"), usage.get("prompt_tokens") or 0)
                metrics.tokens.add((model, "completion"), usage.get("completion_tokens") or 0)
        self.gateway.log.write(line)


class FastLane:
    """POSTs to the proxied routes go straight to their proxies; all else to Starlette.

    The routes are in Starlette's router too, so a path it would redirect, a
    method it would refuse or a mounted prefix still gets its answer there.
    """

    def __init__(self, app: ASGIApp, lanes: Mapping[str, ASGIApp]) -> None:
        self.app = app
        self.lanes = dict(lanes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            lane = self.lanes.get(scope["path"])
            if lane is not None:
                await lane(scope, receive, send)
                return
        await self.app(scope, receive, send)
