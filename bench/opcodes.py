"""Bytecodes a request runs in the serving thread, function by function.

    python -m bench.opcodes               # needs nginx: apt-get install nginx-light
    python -m bench.opcodes --top 60 --passthrough

`bench.instructions` counts a request's instructions exactly but cannot say
which Python function spent them. This counts the bytecodes the server's
event loop thread runs (a trace function with `f_trace_opcodes` on) over a
batch of requests, 8 at a time, after a warm-up, and prints the total a
request and the functions that ran the most. It serves `bench.overhead`'s
full policy (memory counters, the ledger in SQLite); with `--passthrough`,
the bare aiohttp passthrough too, to compare. On 2026-12-02 the passthrough
ran about 5,960 bytecodes a request and gwc 12,700: the same 47% as the
instruction counts. A bytecode has no fixed cost (one that calls into C may
be worth hundreds of instructions, a load a few), so a saving found here is
confirmed with `bench.instructions` before it counts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from types import FrameType
from typing import Any

from bench.instructions import send
from bench.overhead import prepare
from bench.upstream import nginx
from bench.upstream_client import signalled

WARM_UP, MEASURED = 200, 400
GWC_PORT, PASSTHROUGH_PORT, UPSTREAM_PORT = 18921, 18922, 18923


def traced(out: str, module_args: list[str]) -> None:
    """Run a server module here, counting its bytecodes between SIGUSR1 and SIGUSR2
    (then written to `out`, one `count<TAB>file:line:function` a line)."""
    import runpy

    counts: collections.Counter[tuple[str, int, str]] = collections.Counter()

    def called(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes, frame.f_trace_lines = True, False
        code = frame.f_code
        where = (code.co_filename, code.co_firstlineno, code.co_name)

        def each(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[where] += 1
            return each
        return each

    def start(*_: Any) -> None:
        counts.clear()
        sys.settrace(called)

    def stop(*_: Any) -> None:
        sys.settrace(None)
        with open(out, "w") as sink:
            for (file, line, name), count in counts.most_common():
                sink.write(f"{count}\t{file}:{line}:{name}\n")

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = module_args
    runpy.run_module(module_args[0], run_name="__main__", alter_sys=True)


def measure(module_args: list[str], port: int, headers: dict[str, str],
            env: dict[str, str], folder: str) -> list[tuple[float, str]]:
    """(bytecodes a request, function) over MEASURED requests, most first."""
    out = os.path.join(folder, f"opcodes-{port}.txt")

    def sent(count: int) -> Callable[[str], None]:
        return lambda url: asyncio.run(send(f"{url}/v1/chat/completions", count, headers))
    signalled(["bench.opcodes", "--serve", out, *module_args], port, env, out,
              sent(WARM_UP), sent(MEASURED))
    with open(out) as found:
        rows = [line.rstrip("\n").split("\t", 1) for line in found]
    return [(int(count) / MEASURED, where) for count, where in rows]


def short(where: str) -> str:
    for prefix in (sys.prefix + "/", sys.base_prefix + "/",
                   os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/"):
        where = where.replace(prefix, "")
    major, minor = sys.version_info[:2]
    return where.replace(f"lib/python{major}.{minor}/site-packages/", "")


def report(name: str, rows: list[tuple[float, str]], top: int) -> None:
    print(f"{name}: {sum(n for n, _ in rows):,.0f} bytecodes a request "
          f"({MEASURED} requests, 8 at a time, after {WARM_UP} to warm up)")
    for count, where in rows[:top]:
        print(f"  {count:7.0f}  {short(where)}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        traced(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=40, help="functions shown (default 40)")
    parser.add_argument("--passthrough", action="store_true",
                        help="the bare aiohttp passthrough too, for comparison")
    arguments = parser.parse_args()
    with nginx(UPSTREAM_PORT) as upstream, tempfile.TemporaryDirectory() as folder:
        path, database, headers = prepare(folder, upstream)
        gwc = measure(["compiler.cli", "serve", path, "--port", str(GWC_PORT)], GWC_PORT,
                      headers, {"GW_DB_URL": database}, folder)
        report("gwc, full policy, memory counters", gwc, arguments.top)
        if arguments.passthrough:
            bare = measure(["bench.client_passthrough", "aiohttp", upstream,
                            str(PASSTHROUGH_PORT)], PASSTHROUGH_PORT, {}, {}, folder)
            report("bare passthrough", bare, arguments.top)
            print(f"share: {sum(n for n, _ in bare) / sum(n for n, _ in gwc):.1%}")


if __name__ == "__main__":
    main()
