"""Which HTTP client should the gateway forward with? Measured, not assumed.

    python -m bench.upstream_client

A bare Starlette passthrough (uvicorn, uvloop, httptools, one process) forwards
to nginx with each candidate client; wrk drives it with 8 connections. Prints
requests per second for each, in one run, so the ratios are comparable.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, TypeVar

from bench.upstream import nginx

BODY_LUA = """wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"ping"}]}'
wrk.headers["Content-Type"] = "application/json"
"""


T = TypeVar("T")
SERVED: dict[str, int] = {}  # the URL of each server `serving` runs -> its process id


@contextlib.contextmanager
def serving(module_args: list[str], port: int, stderr: IO[str] | None = None) -> Iterator[str]:
    process = subprocess.Popen([sys.executable, "-m", *module_args], stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(port)
        SERVED[url] = process.pid
        yield url
    finally:
        SERVED.pop(url, None)
        process.terminate()
        process.wait()


def signalled(module_args: list[str], port: int, env: dict[str, str], out: str,
              warm: Callable[[str], object], measured: Callable[[str], T]) -> T:
    """Run `python -m *module_args`, a server on `port` that counts from SIGUSR1 and
    writes its count to `out` at SIGUSR2: `warm(url)`, then the count over
    `measured(url)`, and once `out` is written the server stopped. `measured`'s answer
    is returned; `loop_seconds(url)` reads the server while it runs."""
    process = subprocess.Popen([sys.executable, "-m", *module_args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(port, timeout=60)
        SERVED[url] = process.pid
        warm(url)
        process.send_signal(signal.SIGUSR1)
        answer = measured(url)
        process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not os.path.exists(out) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the file is written in one go; let it finish
    finally:
        SERVED.pop(url, None)
        process.terminate()
        process.wait()
    return answer


def loop_seconds(url: str) -> float:
    """The CPU seconds so far of the main thread of the server at `url`, which `serving`
    must be running: its event loop, the thread that bounds a one-process server's
    throughput here (a `--workers` server's workers are not counted). Read from /proc,
    so it is Linux's figure, user and system time together."""
    pid = SERVED[url]
    with open(f"/proc/{pid}/task/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listened on {port}")


def wrk(url: str, connections: int, seconds: int = 8,
        headers: dict[str, str] | None = None, lua: str = BODY_LUA) -> float:
    """Requests per second wrk measured against url's chat completions route; `lua`
    says what to send (by default, one body again and again)."""
    return wrk_cpu(url, connections, seconds, headers, lua)[0]


def wrk_cpu(url: str, connections: int, seconds: int = 8,
            headers: dict[str, str] | None = None, lua: str = BODY_LUA,
            cpu: Callable[[], float] = lambda: 0.0) -> tuple[float, float]:
    """`wrk`'s requests per second, after a second to warm up, and what `cpu` (a reading
    of CPU seconds) rose by a request over the measured run alone (0.0 without one)."""
    if shutil.which("wrk") is None:
        raise SystemExit("the benchmark needs wrk: apt-get install wrk")
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua + "".join(f'wrk.headers["{k}"] = "{v}"\n'
                                        for k, v in (headers or {}).items()))
        script.flush()
        subprocess.run(["wrk", "-t1", f"-c{connections}", "-d1s", "-s", script.name,
                        url + "/v1/chat/completions"], capture_output=True, check=False)
        before = cpu()
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s",
                              script.name, url + "/v1/chat/completions"],
                             capture_output=True, text=True, check=False).stdout
        spent = cpu() - before
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests:\n{out}")
    done = re.search(r"(\d+) requests in", out)
    if match is None or done is None or int(done.group(1)) == 0:
        raise RuntimeError(f"wrk measured nothing:\n{out}")
    return float(match.group(1)), spent / int(done.group(1))


def main() -> None:
    with nginx(18801) as upstream:
        direct = wrk(upstream, 8)
        print(f"{'nginx directly':<24} {direct:>9.0f} req/s")
        for index, client in enumerate(("httpx", "httpx-tuned", "aiohttp")):
            port = 18810 + index
            with serving(["bench.client_passthrough", client, upstream, str(port)], port) as url:
                print(f"{'passthrough, ' + client:<24} {wrk(url, 8):>9.0f} req/s")


if __name__ == "__main__":
    main()
