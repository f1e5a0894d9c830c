"""Which HTTP client should the gateway forward with? Measured, not assumed.

    python -m bench.upstream_client

A bare Starlette passthrough (uvicorn, uvloop, httptools, one process) forwards
to nginx with each candidate client; wrk drives it with 8 connections. Prints
requests per second for each, in one run, so the ratios are comparable.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import IO

from bench.upstream import nginx

BODY_LUA = """wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"ping"}]}'
wrk.headers["Content-Type"] = "application/json"
"""


@contextlib.contextmanager
def serving(module_args: list[str], port: int, stderr: IO[str] | None = None) -> Iterator[str]:
    process = subprocess.Popen([sys.executable, "-m", *module_args], stderr=stderr)
    try:
        wait_for(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


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
    if shutil.which("wrk") is None:
        raise SystemExit("the benchmark needs wrk: apt-get install wrk")
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua + "".join(f'wrk.headers["{k}"] = "{v}"\n'
                                        for k, v in (headers or {}).items()))
        script.flush()
        subprocess.run(["wrk", "-t1", f"-c{connections}", "-d1s", "-s", script.name,
                        url + "/v1/chat/completions"], capture_output=True, check=False)
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s",
                              script.name, url + "/v1/chat/completions"],
                             capture_output=True, text=True, check=False).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests:\n{out}")
    return float(match.group(1)) if match else 0.0


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
