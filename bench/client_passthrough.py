"""A bare Starlette passthrough, forwarding every POST with one HTTP client.

    python -m bench.client_passthrough CLIENT UPSTREAM_URL PORT

CLIENT is httpx, httpx-tuned or aiohttp. Used by bench.upstream_client and by
bench.overhead as the baseline the gateway is compared with.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Forward = Callable[[str, bytes], Awaitable[tuple[int, bytes]]]


def make_forward(client: str) -> tuple[Forward, Callable[[], Awaitable[None]]]:
    if client.startswith("httpx"):
        import httpx

        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200) \
            if client == "httpx-tuned" else httpx.Limits()
        session = httpx.AsyncClient(limits=limits)

        async def forward_httpx(url: str, body: bytes) -> tuple[int, bytes]:
            reply = await session.post(url, content=body,
                                       headers={"content-type": "application/json"})
            return reply.status_code, reply.content
        return forward_httpx, session.aclose
    import aiohttp

    holder: dict[str, aiohttp.ClientSession] = {}

    async def forward_aiohttp(url: str, body: bytes) -> tuple[int, bytes]:
        if "s" not in holder:
            holder["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200),
                                                cookie_jar=aiohttp.DummyCookieJar())  # as gwc
        async with holder["s"].post(url, data=body,
                                    headers={"content-type": "application/json"}) as reply:
            return reply.status, await reply.read()

    async def close() -> None:
        if "s" in holder:
            await holder["s"].close()
    return forward_aiohttp, close


def app(client: str, upstream: str) -> Starlette:
    forward, close = make_forward(client)
    target = upstream.rstrip("/") + "/v1/chat/completions"

    async def passthrough(request: Request) -> Response:
        status, body = await forward(target, await request.body())
        return Response(body, status, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await close()

    return Starlette(routes=[Route("/v1/chat/completions", passthrough, methods=["POST"])],
                     lifespan=lifespan)


if __name__ == "__main__":
    client, upstream, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    uvicorn.run(app(client, upstream), host="127.0.0.1", port=port, log_level="warning",
                loop="uvloop", http="httptools", access_log=False)
