"""Where a request's time goes in the running gateway, stage half by stage half.

    python -m bench.stages           # needs nginx and wrk (apt-get install nginx-light wrk)
    python -m bench.stages --seconds 20
    python -m bench.stages --policies

Timed in a loop of its own, a piece of the request path looks two to three
times cheaper than it is in the server, where each request finds its code and
data gone cold from the caches (the memory store's admission of the bench's
counters: about 6 µs alone, 15 in place). This serves `bench.overhead`'s full
policy (a virtual key, memory counters, the ledger in SQLite) with every stage
half of the pipeline (runtime/pipeline) timed where it runs, by `perf_counter`
around it, under wrk at 8 connections, and prints each half's mean time a
request beside the event loop thread's CPU a request over the same run. The
chain's entry half awaits the upstream, so its figure is wall time, the
upstream's answer included; the others do not wait. Each figure includes its
timer, about 0.3 µs.

`--policies` reads the event loop's CPU a request instead, for the bare
passthrough and for the gateway serving less and more of the full policy, in
alternating rounds (medians): one route and no key; the same with keys; the
full policy without its quota and budget blocks; the full policy. What each
step adds is what its features cost in place, and the first is the floor the
gateway's own machinery sets.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.overhead import body_lua, prepare
from bench.upstream import nginx
from bench.upstream_client import loop_seconds, serving, signalled, wrk, wrk_cpu

PORT, UPSTREAM_PORT = 18971, 18972
ROUNDS = 5
ONE_ROUTE = """provider local {{ type = openai_compatible; base_url = "{upstream}/v1" }}
model m3 {{ provider = local; input = $1/1M; output = $2/1M }}
route {{ otherwise -> m3 }}
"""
Totals = dict[str, list[float]]  # a half's name -> [seconds, calls]


def timed(name: str, half: Callable[..., Any], totals: Totals) -> Callable[..., Any]:
    """`half`, adding its time and calls to `totals[name]`."""
    figures = totals[name] = [0.0, 0]
    clock = time.perf_counter
    if inspect.iscoroutinefunction(half):
        @functools.wraps(half)
        async def waited(exchange: Any) -> Any:
            began = clock()
            try:
                return await half(exchange)
            finally:
                figures[0] += clock() - began
                figures[1] += 1
        return waited

    @functools.wraps(half)
    def run(exchange: Any) -> Any:
        began = clock()
        try:
            return half(exchange)
        finally:
            figures[0] += clock() - began
            figures[1] += 1
    return run


def served(out: str, module_args: list[str]) -> None:
    """Run a gateway here with every stage half timed; SIGUSR1 starts the count
    afresh, SIGUSR2 writes it to `out` as JSON."""
    import runpy

    import runtime.proxy
    from runtime import pipeline

    totals: Totals = {}
    stages = [pipeline.Stage(stage.name,
                             stage.enter and timed(f"{stage.name}.enter", stage.enter, totals),
                             stage.leave and timed(f"{stage.name}.leave", stage.leave, totals),
                             stage.chunk, stage.stream)
              for stage in pipeline.STAGES]
    # the name the proxies run, imported there: rebound there
    runtime.proxy.PIPELINE = pipeline.Pipeline(stages)  # type: ignore[attr-defined]

    def start(*_: Any) -> None:
        for figures in totals.values():
            figures[:] = [0.0, 0]

    def stop(*_: Any) -> None:
        with open(out, "wb") as sink:
            sink.write(orjson.dumps(totals))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = module_args
    runpy.run_module(module_args[0], run_name="__main__", alter_sys=True)


def measure(seconds: int) -> tuple[float, list[tuple[str, float]]]:
    """The event loop's CPU a request, and each half's mean time a call, in µs."""
    with nginx(UPSTREAM_PORT) as upstream, tempfile.TemporaryDirectory() as folder:
        path, database, headers = prepare(folder, upstream)
        out = os.path.join(folder, "stages.json")
        lua = body_lua("ping")
        _, cpu = signalled(
            ["bench.stages", "--serve", out, "compiler.cli", "serve", path, "--port", str(PORT)],
            PORT, {"GW_DB_URL": database}, out,
            lambda url: wrk(url, 8, 2, headers=headers, lua=lua),
            lambda url: wrk_cpu(url, 8, seconds, headers=headers, lua=lua,
                                cpu=functools.partial(loop_seconds, url)))
        with open(out, "rb") as found:
            totals: Totals = orjson.loads(found.read())
    return cpu * 1e6, [(name, spent / calls * 1e6) for name, (spent, calls) in totals.items()
                       if calls]


def policies(seconds: int) -> dict[str, float]:
    """The event loop's CPU a request (µs, median of ROUNDS alternating rounds) of the
    passthrough and of the gateway serving each step towards the full policy."""
    with nginx(UPSTREAM_PORT) as upstream, tempfile.TemporaryDirectory() as folder:
        path, database, headers = prepare(folder, upstream)
        with open(path) as source:
            full = source.read()
        one_route = ONE_ROUTE.format(upstream=upstream)
        steps = {"one route, no key": one_route + "auth { mode = none }\n",
                 "one route, keys": one_route,  # keys: the default
                 "full, no quota or budget": re.sub(r"^(quota|budget) .*$", "", full,
                                                    flags=re.MULTILINE),
                 "full policy": full}
        with contextlib.ExitStack() as stack:
            quiet = stack.enter_context(open(os.devnull, "w"))
            urls = {"passthrough": stack.enter_context(serving(
                ["bench.client_passthrough", "aiohttp", upstream, str(PORT)], PORT))}
            for port, (name, policy) in enumerate(steps.items(), start=PORT + 10):
                file = os.path.join(folder, f"{port}.gw")
                with open(file, "w") as out:
                    out.write(policy)
                os.environ["GW_DB_URL"] = database
                urls[name] = stack.enter_context(serving(
                    ["compiler.cli", "serve", file, "--port", str(port)], port, stderr=quiet))
            lua = body_lua("ping")
            figures: dict[str, list[float]] = {name: [] for name in urls}
            for _ in range(ROUNDS):
                for name, url in urls.items():
                    figures[name].append(wrk_cpu(url, 8, seconds, headers=headers, lua=lua,
                                                 cpu=functools.partial(loop_seconds, url))[1])
    return {name: statistics.median(each) * 1e6 for name, each in figures.items()}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        served(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="the measured run (default 10)")
    parser.add_argument("--policies", action="store_true",
                        help="the loop's CPU a request, from one route to the full policy")
    arguments = parser.parse_args()
    if arguments.policies:
        found = policies(min(arguments.seconds, 4))
        bare = found["passthrough"]
        print(f"the event loop's CPU a request (wrk, 8 connections, median of {ROUNDS} "
              "alternating rounds), and the passthrough's share of it")
        for name, each in found.items():
            print(f"  {name:<26} {each:6.0f} µs  {bare / each:4.0%}")
        return
    from runtime.pipeline import STAGES

    cpu, halves = measure(arguments.seconds)
    met = [f"{s.name}.enter" for s in STAGES if s.enter] + \
        [f"{s.name}.leave" for s in reversed(STAGES) if s.leave]  # as a request meets them
    halves.sort(key=lambda half: met.index(half[0]))
    print(f"gwc, full policy, memory counters: the event loop's CPU {cpu:.0f} µs a request "
          f"(wrk, 8 connections, {arguments.seconds} s)")
    print(f"  {'stage half':<22} {'µs a request':>12}")
    for name, each in halves:
        print(f"  {name:<22} {each:12.1f}" + ("  (wall: the upstream's answer in it)"
                                              if name == "chain.enter" else ""))
    staged = sum(each for name, each in halves if name != "chain.enter")
    print(f"  {'all but chain.enter':<22} {staged:12.1f}  ({staged / cpu:.0%} of the loop's CPU)")


if __name__ == "__main__":
    main()
