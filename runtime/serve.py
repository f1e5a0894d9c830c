"""`gwc serve FILE`: the gateway on uvicorn, with hot reload on --watch, SIGHUP and
`POST /admin/reload`, and a graceful drain on SIGTERM.

FILE is a policy (compiled here, once, and handed to the gateway to start on)
or a `graph.json` from `gwc compile` (validated, not recompiled). `--workers N`
forks N processes that accept on one socket, so one machine's cores are used;
they share their counters through Redis (GW_STATE_URL), without which N > 1
is refused: each worker would count alone, and every limit would hold N times.

uvicorn runs gwc's own HTTP protocol (runtime/http_limits.py: a head size limit
and a read timeout). Once the gateway exists, everything the process says on
standard error leaves through its log's one writer, as JSON lines: access lines,
lifecycle events (serving, reload, stopping, stopped) and logging records, uvicorn's
included (runtime/access_log.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator

import uvicorn
import uvloop

from compiler.compiled import CompiledPolicy, Refused, load
from runtime.access_log import capture
from runtime.app import create_app
from runtime.gateway import Gateway
from runtime.http_limits import Limits, protocol
from runtime.proxy import MAX_BODY_BYTES
from runtime.state import State, StateError, min_lease_from, shares_counters

DRAIN_SECONDS = 30
# The collector looks at its youngest objects once 700 more were made than freed
# (CPython's default). A request's objects are freed by reference counting as it
# ends, but with many requests in flight that count crosses 700 mid-way again and
# again: at 32 connections a collection every ten requests, 5% of the event loop's
# time, for objects nearly all freed a moment later. At 10,000 it crosses rarely;
# cycles are still found, a little later.
YOUNG_OBJECTS = 10_000


class _Server(uvicorn.Server):
    """uvicorn's server, with the signals left to `gwc serve`, and a word once it listens.

    uvicorn re-raises SIGTERM after a graceful shutdown, so a gateway that
    drained cleanly would still die by the signal; here a drain ends in exit 0.
    """

    def __init__(self, config: uvicorn.Config, listening: Callable[[], None]) -> None:
        super().__init__(config)
        self.listening = listening

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening()


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
                await gateway.reload("watch")
                break  # the imports may have changed: watch the new set of files


def run(path: str, host: str, port: int, watch_files: bool, insecure: bool,
        workers: int = 1) -> int:
    env = dict(os.environ)
    try:
        compiled = load(path, env)
    except Refused as refusal:
        sys.stderr.write(refusal.report)
        return 1
    if compiled.auth.mode == "none" and not is_loopback(host) and not insecure:
        print(f"gwc: this policy has auth {{ mode = none }}; refusing to listen on {host} "
              "without --insecure", file=sys.stderr)
        return 2
    try:
        limits = Limits.from_env(env)
        shared = shares_counters(env.get("GW_STATE_URL") or "memory")  # a bad one fails here
        min_lease_from(env)
    except (ValueError, StateError) as exc:
        print(f"gwc: {exc}", file=sys.stderr)
        return 2
    if workers < 1:
        print("gwc: --workers must be 1 or more", file=sys.stderr)
        return 2
    if workers > 1 and not shared:
        print(f"gwc: --workers {workers} needs shared counters: set GW_STATE_URL=redis://... "
              "(with memory counters each worker would count alone, and every quota and "
              "budget would hold N times over)", file=sys.stderr)
        return 2
    if workers == 1:
        return serve(path, compiled, env, host, port, watch_files, limits)
    return _workers(workers, host, port, lambda listening: serve(
        path, compiled, env, host, port, watch_files, limits, listening))


def _workers(count: int, host: str, port: int, serve_on: Callable[[socket.socket], int]) -> int:
    """`count` processes serving one port: the socket is bound here, and each worker,
    forked once the policy is compiled (so it starts at once, sharing the compiled
    pages), accepts on it. The signals that stop or reload are passed on to them."""
    listening = socket.create_server((host, port), backlog=2048)
    gc.freeze()  # the compiled policy stays shared with the workers, not copied by the GC
    children: list[int] = []
    passed_on = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)
    for each in passed_on:  # before forking: a signal in between must not be lost
        signal.signal(each, forward)
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            for each in passed_on:
                signal.signal(each, signal.SIG_DFL)  # the worker's loop takes them over
            code = 1
            try:
                code = serve_on(listening)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append(pid)
    listening.close()
    codes = [os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) for child in children]
    return 0 if all(code == 0 for code in codes) else 1


def serve(path: str, compiled: CompiledPolicy, env: dict[str, str], host: str, port: int,
          watch_files: bool, limits: Limits, listening: socket.socket | None = None) -> int:
    """One process serving: on `listening` if given (a worker), else on host:port."""
    try:
        state = State.from_env(env)
    except StateError as exc:
        print(f"gwc: {exc}", file=sys.stderr)
        return 1
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])
    gateway = Gateway(path, env, state=state)
    max_body = int(env.get("GW_MAX_BODY_BYTES", MAX_BODY_BYTES))
    app = create_app(gateway, max_body=max_body, admin_key=env.get("GW_ADMIN_KEY") or None,
                     compiled=compiled)
    log = gateway.log
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop",
                            http=protocol(limits, log, lambda: gateway.version), ws="none",
                            log_config=None, log_level="warning", access_log=False,
                            server_header=False,  # docs/gateway.md: no `server: uvicorn`
                            proxy_headers=False,  # nothing reads the client's address
                            timeout_graceful_shutdown=DRAIN_SECONDS)
    url = f"http://{host}:{port}"
    server = _Server(config, lambda: log.event(
        "serving", f"gwc: serving {path} on {url} (policy {gateway.version})", file=path,
        url=url, policy=gateway.version, max_header_bytes=limits.max_header_bytes,
        read_timeout=limits.read_timeout, pid=os.getpid()))

    # Reloads in progress, held so that none is collected mid-way, and dropped when the
    # gateway stops: one that ended during the drain would swap in a policy nothing serves.
    reloads: set[asyncio.Task[object]] = set()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def on_sighup() -> None:
            if server.should_exit:
                return
            task = loop.create_task(gateway.reload("sighup"))
            reloads.add(task)
            task.add_done_callback(reloads.discard)
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        for stop in (signal.SIGTERM, signal.SIGINT):  # stop accepting, drain, exit 0
            loop.add_signal_handler(stop, stopping, stop)
        if watch_files:
            watcher = loop.create_task(watch(gateway))
            reloads.add(watcher)
        try:
            await server.serve(sockets=[listening] if listening is not None else None)
        finally:
            for task in list(reloads):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def stopping(by: signal.Signals) -> None:
        if not server.should_exit:
            log.event("stopping", f"gwc: {by.name}: no new connections; waiting up to "
                      f"{DRAIN_SECONDS} s for requests in flight", signal=by.name)
            for task in reloads:
                task.cancel()
        server.should_exit = True

    release = capture(log)
    try:
        uvloop.run(main())  # uvicorn's own loop setting applies only when uvicorn makes the loop
        log.event("stopped", "gwc: stopped")
    finally:
        release()
        log.close()
    return 0
