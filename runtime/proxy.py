"""The proxied routes as bare ASGI apps: read the body, run the pipeline, write the bytes.

These routes carry nearly all of a gateway's traffic, so they read the ASGI
scope and messages themselves instead of through Starlette's Request and
Response, and `FastLane` hands them their POSTs before Starlette's
middleware and router (docs/gateway.md has the figures). Everything between
reading and writing is the pipeline's (`runtime/pipeline`). So that the answer
is the same either way in, a proxy answers its own errors: each in its API's
shape (runtime/formats: OpenAI's, or Anthropic's on the Messages routes) with
the `x-gw-*` headers, an unexpected one as a logged 500, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.endpoints import Endpoint
from runtime.errors import GatewayError, UpstreamError
from runtime.gateway import Gateway
from runtime.hangups import Hangups
from runtime.pipeline import PIPELINE
from runtime.pipeline.exchange import Exchange
from runtime.request_ids import new_request_id

MAX_BODY_BYTES = 8 * 1024 * 1024
# orjson reads JSON 1,024 levels deep but writes only 255, and a translation for
# an upstream nests the client's fields a few levels deeper: a body is taken only
# as deep as every upstream call can carry it.
MAX_JSON_DEPTH = 200
logger = logging.getLogger("gwc")


class StreamBroken(Exception):
    """Raised after the error event of a stream that failed mid-way: it makes the
    server drop the connection, so no client mistakes the stream for complete."""


def internal_error() -> GatewayError:
    return GatewayError(500, "internal error in the gateway", "internal")


def stamp(exchange: Exchange) -> list[tuple[bytes, bytes]]:
    """The `x-gw-*` headers of a proxied answer, encoded for ASGI."""
    headers = [(b"x-gw-request-id", exchange.request_id.encode()),
               (b"x-gw-policy", exchange.loaded.version_header)]
    deployment, hit = exchange.answered_by, exchange.hit
    if deployment is not None:
        headers += [(b"x-gw-model", deployment.name.encode()),
                    (b"x-gw-provider", deployment.provider.name.encode()),
                    (b"x-gw-attempts", b"%d" % exchange.tried()),
                    (b"x-gw-cache", exchange.cache.encode())]
    elif hit is not None:
        headers += [(b"x-gw-model", hit.model.encode()),
                    (b"x-gw-provider", hit.provider.encode()), (b"x-gw-attempts", b"0"),
                    (b"x-gw-cache", b"hit")]
        if exchange.similarity is not None:
            headers.append((b"x-gw-cache-similarity", b"%.4f" % exchange.similarity))
    if exchange.cost is not None and exchange.answer is not None:
        headers.append((b"x-gw-cost", b"%.8f" % exchange.cost))
    if exchange.limit_headers:
        headers += exchange.limit_headers
    guarding = exchange.guarding
    if guarding is not None and guarding.acted:
        headers.append((b"x-gw-guards", guarding.header().encode()))
    return headers


async def send_json(send: Send, status: int, content: bytes,
                    headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(content)),
        *headers]})
    await send({"type": "http.response.body", "body": content})


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
    data = b"".join(chunks)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"the request body is not JSON: {exc}", "invalid_json") from exc
    # Only a body with that many brackets can be that deep; counting them is a memchr.
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH and \
            _depth(body) > MAX_JSON_DEPTH:
        raise GatewayError(400, f"the request body is nested over {MAX_JSON_DEPTH} levels deep",
                           "invalid_json")
    return body


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((child, depth + 1) for child in item)
    return deepest


class Proxy:
    """One proxied route: the request read, the pipeline run, the answer sent."""

    def __init__(self, gateway: Gateway, endpoint: Endpoint, hangups: Hangups,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.hangups = hangups
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        loaded = gateway.current  # this request's policy, whatever reloads come
        request_id = new_request_id()
        if loaded is None:
            unready = GatewayError(503, "no policy loaded", "not_ready")
            await send_json(send, 503, orjson.dumps(self.endpoint.format.error(unready)),
                            [(b"x-gw-request-id", request_id.encode())])
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        exchange = Exchange(request_id, self.endpoint, gateway, loaded, headers, {},
                            gateway.clock())
        try:
            exchange.body = await read_json(headers, receive, self.max_body)
            await self.hangups.guard(receive, PIPELINE.enter(exchange))
        except GatewayError as error:
            exchange.error, exchange.status = error, error.status
        except Exception as exc:  # a bug of ours: the client gets a 500, the log the traceback
            logger.exception("unexpected error", exc_info=exc)
            exchange.error, exchange.status = internal_error(), 500
        if exchange.chunks is not None:
            response = StreamingResponse(self.stream(exchange, exchange.chunks),
                                         media_type=self.endpoint.format.media_type,
                                         headers={"cache-control": "no-cache"})
            response.raw_headers += stamp(exchange)
            await response(scope, receive, send)
            return
        await self.leave(exchange)
        refusal = exchange.error
        if refusal is not None:
            await send_json(send, refusal.status,
                            orjson.dumps(self.endpoint.format.error(refusal)), [
                *((k.lower().encode(), v.encode()) for k, v in refusal.headers.items()),
                *stamp(exchange)])
            return
        await send_json(send, 200, orjson.dumps(exchange.answer), stamp(exchange))

    async def leave(self, exchange: Exchange) -> None:
        try:
            await PIPELINE.leave(exchange)
        except Exception as exc:
            logger.exception("unexpected error on the way out", exc_info=exc)
            if exchange.error is None and exchange.chunks is None:
                exchange.error, exchange.status = internal_error(), 500
                exchange.answer = None

    async def stream(self, exchange: Exchange, chunks: AsyncIterator[Any]
                     ) -> AsyncIterator[bytes]:
        form = self.endpoint.format
        try:
            async for chunk in chunks:
                out = PIPELINE.outgoing(exchange, chunk)
                if out is not None:
                    yield form.frame(out)
            if form.done:
                yield form.done
        except UpstreamError as failure:
            exchange.status = 502
            exchange.error = GatewayError(502, f"the stream broke after it began: "
                                          f"{failure.message}", "stream_interrupted")
            yield form.broken(exchange.error)
            raise StreamBroken(failure.message) from failure
        except GatewayError as refusal:  # an output guard's, mid-stream
            exchange.status, exchange.error = refusal.status, refusal
            yield form.broken(refusal)
            raise StreamBroken(refusal.message) from refusal
        except asyncio.CancelledError:
            exchange.status = 499
            exchange.error = GatewayError(499, "the client closed the connection",
                                          "client_closed")
            raise
        except Exception as exc:
            logger.exception("unexpected error in a stream", exc_info=exc)
            exchange.status, exchange.error = 500, internal_error()
            yield form.broken(exchange.error)
            raise StreamBroken("internal error") from exc
        finally:
            await self.leave(exchange)


class FastLane:
    """POSTs to the proxied routes go straight to their proxies; all else to Starlette.

    The routes are in Starlette's router too, so a method it would refuse or a
    mounted prefix still gets its answer there.
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
