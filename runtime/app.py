"""The HTTP surface of `interface.md`, on Starlette.

Every answer carries `x-gw-request-id` and `x-gw-policy`; a proxied one also
says which model and provider answered, after how many attempts, at what
cost (`runtime/proxy.py`). Errors of every kind leave through
`error_response`, in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from compiler.compiled import CompiledPolicy
from runtime import admin_records
from runtime.admin_records import json_body, text_field
from runtime.endpoints import ENDPOINTS, RESPONSES
from runtime.errors import GatewayError, error_response
from runtime.gateway import Gateway
from runtime.hangups import Hangups
from runtime.pipeline import conversation, identity
from runtime.pipeline.exchange import Exchange
from runtime.proxy import MAX_BODY_BYTES, FastLane, Proxy, internal_error
from runtime.request_ids import new_request_id

SCOPE = re.compile(r"global|(team|user|key)=.+")  # a cache entry's scope subject

logger = logging.getLogger("gwc")


def create_app(gateway: Gateway, max_body: int = MAX_BODY_BYTES,
               admin_key: str | None = None, compiled: CompiledPolicy | None = None) -> ASGIApp:
    """The gateway's app; `compiled` is the policy to start on, else it compiles `gateway.path`."""
    hangups = Hangups()
    lanes = {e.path: Proxy(gateway, e, hangups, max_body) for e in ENDPOINTS}

    def stamped() -> dict[str, str]:
        """The headers every answer carries, for answers that proxy nothing."""
        return {"x-gw-request-id": new_request_id(), "x-gw-policy": gateway.version}

    def model_list() -> list[dict[str, object]]:
        loaded = gateway.current
        if loaded is None:
            raise GatewayError(503, "no policy loaded", "not_ready")
        policy = loaded.policy
        return [*({"id": d.name, "object": "model", "created": 0, "owned_by": d.provider.name}
                  for d in policy.deployments.values()),
                *({"id": p.name, "object": "model", "created": 0, "owned_by": "gwc pool"}
                  for p in policy.pools.values())]

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": model_list()}, headers=stamped())

    async def model(request: Request) -> Response:
        name = request.path_params["name"]
        found = next((m for m in model_list() if m["id"] == name), None)
        if found is None:
            raise GatewayError(404, f"the model '{name}' does not exist here",
                               "model_not_found", param="model")
        return JSONResponse(found, headers=stamped())

    async def stored_response(request: Request) -> Response:
        """`GET` and `DELETE /v1/responses/{id}`: the caller's own stored responses; any
        other's is as unknown as one never stored."""
        loaded = gateway.current
        if loaded is None:
            raise GatewayError(503, "no policy loaded", "not_ready")
        caller = Exchange(new_request_id(), RESPONSES, gateway, loaded, dict(request.headers),
                          {}, gateway.clock())
        identity.enter(caller)
        store, ident = gateway.state.responses, request.path_params["response_id"]
        owner = conversation.owner_of(caller)
        if store is not None and request.method == "DELETE":
            if await asyncio.to_thread(store.delete, ident, owner):
                return JSONResponse({"id": ident, "object": "response", "deleted": True},
                                    headers=stamped())
        elif store is not None:
            found = await asyncio.to_thread(store.get, ident, owner)
            if found is not None:
                return JSONResponse(found.response, headers=stamped())
        raise GatewayError(404, f"no response with id '{ident}'", "response_not_found",
                           param="response_id")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers=stamped())

    async def readyz(request: Request) -> Response:
        """Ready with a policy loaded. A replica whose shared counters are unreachable
        still serves (as its policy's `on_store_error` says), so it stays ready, and
        says it is degraded."""
        if gateway.current is None:
            return JSONResponse({"status": "not ready", "reason": "no policy loaded"}, 503,
                                headers=stamped())
        answer: dict[str, object] = {"status": "ready", "policy": gateway.version,
                                     "counters": "shared" if gateway.state.shared else "memory"}
        if gateway.limiter.degraded:
            answer.update(status="degraded", counters="unreachable: counting in memory")
        return JSONResponse(answer, headers=stamped())

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
            "files": loaded.sources if loaded else [], "refused": gateway.refused,
            "counters": gateway.counters})

    async def admin_breakers(request: Request) -> Response:
        return JSONResponse(gateway.breakers())

    async def admin_cache_flush(request: Request) -> Response:
        """All entries, or one scope subject's (`{"scope": "team=research"}`)."""
        scope = text_field(await json_body(request), "scope") if await request.body() else None
        if scope is not None and not SCOPE.fullmatch(scope):
            raise GatewayError(400, "'scope' is `global` or `team=NAME`, `user=NAME`, "
                               "`key=KEY_ID`", "invalid_value", param="scope")
        return JSONResponse({"flushed": await gateway.cacher.flush(scope)})

    records = admin_records.routes(gateway)
    routes = [
        *(Route(path, proxy, methods=["POST"]) for path, proxy in lanes.items()),
        Route("/v1/responses/{response_id}", stored_response, methods=["GET", "DELETE"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", model, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/admin/reload", admin(admin_reload), methods=["POST"]),
        Route("/admin/policy", admin(admin_policy), methods=["GET"]),
        Route("/admin/breakers", admin(admin_breakers), methods=["GET"]),
        Route("/admin/cache/flush", admin(admin_cache_flush), methods=["POST"]),
        Route("/admin/keys", admin(records["create_key"]), methods=["POST"]),
        Route("/admin/keys", admin(records["list_keys"]), methods=["GET"]),
        Route("/admin/keys/{key_id}", admin(records["revoke_key"]), methods=["DELETE"]),
        Route("/admin/spend", admin(records["spend"]), methods=["GET"]),
    ]

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc, stamped())

    async def http_error(request: Request, exc: Exception) -> Response:
        """The router's own answers (no such path, a method not allowed), in OpenAI's
        shape, or in that of the API whose route it is (Anthropic's on its own)."""
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            error = GatewayError(405, f"{request.method} is not allowed on {request.url.path}",
                                 "method_not_allowed", headers=dict(exc.headers or {}))
        else:
            error = GatewayError(exc.status_code, f"no such route: {request.method} "
                                 f"{request.url.path}", "unknown_route")
        lane = lanes.get(request.url.path)
        if lane is not None:
            return JSONResponse(lane.endpoint.format.error(error), error.status,
                                headers={**error.headers, **stamped()})
        return error_response(error, stamped())

    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error", exc_info=exc)
        return error_response(internal_error(), stamped())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start(compiled)
        try:
            yield
        finally:
            await hangups.close()
            await gateway.close()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        GatewayError: refused, HTTPException: http_error, Exception: unexpected})
    # A path with a slash too many is not found, not redirected: the redirect's URL
    # would be built from the client's Host header.
    app.router.redirect_slashes = False
    return FastLane(app, lanes)
