"""The HTTP surface of `interface.md`, on Starlette.

Every answer carries `x-gw-request-id` and `x-gw-policy`; a proxied one also
says which model and provider answered, after how many attempts, at what
cost. Errors of every kind leave through `error_response`, in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.errors import GatewayError, UpstreamError, error_response
from runtime.gateway import Answer, Gateway, Loaded, cost

MAX_BODY_BYTES = 8 * 1024 * 1024
logger = logging.getLogger("gwc")


class StreamBroken(Exception):
    """Raised after the error event of a stream that failed mid-way: it makes the
    server drop the connection, so no client mistakes the stream for complete."""


async def read_json(headers: dict[str, str], receive: Receive, limit: int) -> Any:
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


WATCH_AFTER = 0.05  # seconds: an answer sooner than this leaves nothing worth cancelling


async def until_disconnect(receive: Receive, work: Awaitable[Answer]) -> Answer:
    """Run `work`, cancelling it (and so its upstream call) if the client goes away.

    The work runs here, in the handler. A watcher task waits for the client's
    disconnect and cancels the handler; it is started only after WATCH_AFTER,
    by a timer, since most answers from a fast upstream (or, later, a cache)
    come sooner and a task per request is most of what watching costs.
    """
    handler = asyncio.current_task()
    assert handler is not None
    loop = asyncio.get_running_loop()
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        handler.cancel()

    def start() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())
    timer = loop.call_later(WATCH_AFTER, start)
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            raise GatewayError(499, "the client closed the connection",
                               "client_closed") from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


class Bare:
    """A bare ASGI app for Starlette to route to as it is.

    Starlette wraps a plain function in a Request and a Response; the proxied
    routes skip both, which on the hot path cost more than the policy does.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


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


def create_app(gateway: Gateway, max_body: int = MAX_BODY_BYTES,
               admin_key: str | None = None) -> Starlette:
    def stamped() -> dict[str, str]:
        """The headers every answer carries, for answers that proxy nothing."""
        return {"x-gw-request-id": new_request_id(), "x-gw-policy": gateway.version}

    def headers_for(exchange: Exchange, answer: Answer | None = None,
                    spent: float | None = None) -> dict[str, str]:
        headers = {"x-gw-request-id": exchange.request_id, "x-gw-policy": exchange.version}
        if answer is not None:
            headers.update({"x-gw-model": answer.model.name, "x-gw-provider": answer.model.provider,
                            "x-gw-attempts": str(answer.tried()), "x-gw-cache": "bypass"})
        if spent is not None:
            headers["x-gw-cost"] = f"{spent:.8f}"
        return headers

    def finish(exchange: Exchange, status: int, answer: Answer | None,
               usage: dict[str, Any] | None, error: str | None = None) -> None:
        seconds = time.monotonic() - exchange.started
        model = answer.model.name if answer else ""
        provider = answer.model.provider if answer else ""
        rule = answer.rule if answer else ""
        metrics = gateway.metrics
        metrics.child(metrics.requests, rule, model, provider, str(status), "bypass").inc()
        metrics.child(metrics.latency, rule).observe(seconds)
        if answer and usage:
            for kind in ("prompt_tokens", "completion_tokens"):
                metrics.child(metrics.tokens, model, kind.split("_")[0]).inc(usage.get(kind) or 0)
        gateway.log.write(
            request_id=exchange.request_id, path=exchange.path, status=status,
            ms=round(seconds * 1000, 2), model=model or None, provider=provider or None,
            rule=rule or None,
            attempts=[{"model": a.model, "outcome": a.outcome} for a in answer.attempts]
            if answer else None, tokens=usage or None,
            cost=round(cost(answer.model, usage), 8) if answer and usage else None,
            policy=exchange.version, error=error)

    def proxy(endpoint: Callable[[Loaded, Any, dict[str, str]], Awaitable[Answer]]) -> ASGIApp:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            loaded = gateway.current  # this request's policy, whatever reloads come
            exchange = Exchange(new_request_id(), scope["path"], time.monotonic(),
                                loaded.version if loaded else "")
            if loaded is None:
                error = GatewayError(503, "no policy loaded", "not_ready")
                await error_response(error, headers_for(exchange))(scope, receive, send)
                return
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                body = await read_json(headers, receive, max_body)
                answer = await until_disconnect(receive, endpoint(loaded, body, headers))
            except GatewayError as error:
                finish(exchange, error.status, None, None, error.message)
                await error_response(error, headers_for(exchange))(scope, receive, send)
                return
            if answer.body is None:
                await StreamingResponse(
                    stream(exchange, answer), media_type="text/event-stream",
                    headers={**headers_for(exchange, answer), "cache-control": "no-cache"},
                )(scope, receive, send)
                return
            usage = answer.body.get("usage") or {}
            finish(exchange, 200, answer, usage)
            content = orjson.dumps(answer.body)
            fields = headers_for(exchange, answer, cost(answer.model, usage))
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *((k.encode(), v.encode()) for k, v in fields.items())]})
            await send({"type": "http.response.body", "body": content})
        return Bare(handle)

    async def stream(exchange: Exchange, answer: Answer) -> AsyncIterator[bytes]:
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
            finish(exchange, status, answer, usage, error)

    async def models(request: Request) -> Response:
        loaded = gateway.current
        if loaded is None:
            return error_response(GatewayError(503, "no policy loaded", "not_ready"), stamped())
        data = [{"id": m.name, "object": "model", "created": 0, "owned_by": m.provider}
                for m in loaded.policy.models.values()]
        data += [{"id": p.name, "object": "model", "created": 0, "owned_by": "gwc pool"}
                 for p in loaded.policy.pools.values()]
        return JSONResponse({"object": "list", "data": data}, headers=stamped())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers=stamped())

    async def readyz(request: Request) -> Response:
        if gateway.current is None:
            return JSONResponse({"status": "not ready", "reason": "no policy loaded"}, 503,
                                headers=stamped())
        return JSONResponse({"status": "ready", "policy": gateway.version}, headers=stamped())

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4",
                        headers=stamped())

    def admin(handler: Callable[[Request], Awaitable[Response]]
              ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            if not admin_key:
                return error_response(GatewayError(403, "the admin API is off: set GW_ADMIN_KEY",
                                                   "admin_disabled"), stamped())
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), admin_key.encode()):
                return error_response(GatewayError(401, "the admin API needs "
                                                   "Authorization: Bearer $GW_ADMIN_KEY",
                                                   "invalid_admin_key"), stamped())
            answer = await handler(request)
            answer.headers.update(stamped())
            return answer
        return guarded

    async def admin_reload(request: Request) -> Response:
        outcome = await gateway.reload()
        return JSONResponse(outcome, 200 if outcome["outcome"] == "loaded" else 422)

    async def admin_policy(request: Request) -> Response:
        loaded = gateway.current
        return JSONResponse({
            "version": gateway.version, "path": gateway.path,
            "loaded_at": loaded.loaded_at if loaded else None,
            "files": loaded.sources if loaded else [], "refused": gateway.refused})

    async def admin_breakers(request: Request) -> Response:
        return JSONResponse(gateway.breakers())

    routes = [
        Route("/v1/chat/completions", proxy(gateway.chat), methods=["POST"]),
        Route("/v1/embeddings", proxy(gateway.embeddings), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/admin/reload", admin(admin_reload), methods=["POST"]),
        Route("/admin/policy", admin(admin_policy), methods=["GET"]),
        Route("/admin/breakers", admin(admin_breakers), methods=["GET"]),
    ]

    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error", exc_info=exc)
        return error_response(GatewayError(500, "internal error in the gateway", "internal"),
                              stamped())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.close()

    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={Exception: unexpected})
