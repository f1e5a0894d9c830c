"""CPU instructions gwc spends per request: a figure this machine's noise can't move.

    python -m bench.instructions           # needs valgrind and nginx:
    python -m bench.instructions --guards  # apt-get install valgrind nginx-light

Wall-clock throughput here moves by a third between runs, which hides a 5%
change on the request path. Callgrind counts the instructions the gateway's
process executes instead: it serves `bench.overhead`'s full policy under
valgrind (a virtual key, memory counters, the ledger in SQLite), its counts are
zeroed after a warm-up, and the total over a batch of
requests, 8 at a time, divided by their number is the figure. Compare commits
with it (`git worktree add /tmp/base REV`, then the bench from there). With
`--guards` the policy also has `bench.overhead`'s two input guards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile

import aiohttp

from bench.overhead import BODY, GUARDS, prepare
from bench.upstream import nginx
from bench.upstream_client import wait_for

WARM_UP, MEASURED, CONCURRENCY = 200, 800, 8


async def send(url: str, count: int, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as session:
        async def one_client(share: int) -> None:
            for _ in range(share):
                async with session.post(url, json=BODY, headers=headers) as reply:
                    await reply.read()
                    assert reply.status == 200, await reply.text()
        await asyncio.gather(*(one_client(count // CONCURRENCY) for _ in range(CONCURRENCY)))


def callgrind(*arguments: str) -> None:
    subprocess.run(["callgrind_control", *arguments], check=True, capture_output=True)


def total_instructions(out_file: str) -> int:
    """Sum of the `summary:` lines of the dumps callgrind wrote since the counts were zeroed."""
    total = 0
    folder, prefix = os.path.split(out_file)
    for name in os.listdir(folder):
        if name.startswith(prefix + "."):
            with open(os.path.join(folder, name)) as dump:
                for line in dump:
                    if line.startswith("summary:"):
                        total += int(line.split()[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guards", action="store_true",
                        help="with two input guards every request meets")
    guarded = parser.parse_args().guards
    with nginx(18911) as upstream, tempfile.TemporaryDirectory() as folder:
        path, database, headers = prepare(folder, upstream)
        if guarded:
            with open(path, "a") as policy:
                policy.write(GUARDS)
        out_file = os.path.join(folder, "callgrind.out")
        process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
             sys.executable, "-m", "compiler.cli", "serve", path, "--port", "18912"],
            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            env={**os.environ, "GW_DB_URL": database})
        try:
            wait_for(18912, timeout=600)
            url = "http://127.0.0.1:18912/v1/chat/completions"
            asyncio.run(send(url, WARM_UP, headers))
            callgrind("--zero", str(process.pid))
            asyncio.run(send(url, MEASURED, headers))
            callgrind("--dump", str(process.pid))
        finally:
            process.terminate()
            process.wait()
        per_request = total_instructions(out_file) / MEASURED
        print(f"{per_request / 1000:,.0f}k instructions per request "
              f"({MEASURED} requests, {CONCURRENCY} at a time, after {WARM_UP} to warm up)")


if __name__ == "__main__":
    main()
