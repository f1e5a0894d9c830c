"""`gwc serve FILE`: the gateway on uvicorn, with hot reload on --watch, SIGHUP and
`POST /admin/reload`, and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import sys
from collections.abc import Iterator

import uvicorn
import uvloop

from compiler.driver import check
from runtime.app import create_app
from runtime.gateway import Gateway
from runtime.proxy import MAX_BODY_BYTES

DRAIN_SECONDS = 30


class _Server(uvicorn.Server):
    """uvicorn's server, with the signals left to `gwc serve`.

    uvicorn re-raises SIGTERM after a graceful shutdown, so a gateway that
    drained cleanly would still die by the signal; here a drain ends in exit 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def watch(gateway: Gateway) -> None:
    """Reload whenever the policy file or one it imports changes."""
    import watchfiles

    while True:
        files = gateway.current.sources if gateway.current else [gateway.path]
        folders = sorted({os.path.dirname(os.path.abspath(f)) for f in files})
        watched = {os.path.abspath(f) for f in files}
        async for changes in watchfiles.awatch(*folders, debounce=200, step=50):
            if any(os.path.abspath(path) in watched for _, path in changes):
                outcome = await gateway.reload()
                print(f"gwc: reload {outcome['outcome']}: "
                      f"{outcome.get('message') or outcome['version']}", file=sys.stderr)
                break  # the imports may have changed: watch the new set of files


def run(path: str, host: str, port: int, watch_files: bool, insecure: bool) -> int:
    ctx = check(path)
    errors = [d for d in ctx.diagnostics if d.is_error]
    if errors:
        from compiler.output import Report, render

        sys.stderr.write(render(Report(errors, ctx.sources), "text"))
        return 1
    assert ctx.graph is not None
    if ctx.graph.policy.auth.mode == "none" and not is_loopback(host) and not insecure:
        print(f"gwc: this policy has auth {{ mode = none }}; refusing to listen on {host} "
              "without --insecure", file=sys.stderr)
        return 2
    env = dict(os.environ)
    gateway = Gateway(path, env)
    max_body = int(env.get("GW_MAX_BODY_BYTES", MAX_BODY_BYTES))
    app = create_app(gateway, max_body=max_body, admin_key=env.get("GW_ADMIN_KEY") or None)
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools",
                            log_level="warning", access_log=False,
                            timeout_graceful_shutdown=DRAIN_SECONDS)
    server = _Server(config)

    version = ctx.graph.version

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(gateway.reload()))
        for stop in (signal.SIGTERM, signal.SIGINT):  # stop accepting, drain, exit 0
            loop.add_signal_handler(stop, lambda: setattr(server, "should_exit", True))
        watcher = loop.create_task(watch(gateway)) if watch_files else None
        print(f"gwc: serving {path} on http://{host}:{port} (policy {version})",
              file=sys.stderr)
        try:
            await server.serve()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    uvloop.run(main())  # uvicorn's own loop setting applies only when uvicorn makes the loop
    return 0
