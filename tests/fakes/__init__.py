"""Loopback stand-ins for the LLM providers, and a way to run any ASGI app on a port.

Each fake follows its provider's documented wire format and is driven by that
provider's official SDK in `tests/runtime/test_fakes.py`, so that it speaks
today's API rather than a remembered one. Behaviour is scripted by the model
name a request asks for (see `Script`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import uvicorn

API_KEY = "test-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app on 127.0.0.1 in a background thread; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical",
                            loop="asyncio", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def gwc_serve(file: str, port: int, log: IO[str], *flags: str,
              env: dict[str, str] | None = None, wait: float = 30) -> subprocess.Popen[str]:
    """`gwc serve FILE` as a process on 127.0.0.1:port, once it answers /readyz; its
    database beside its log unless `env` names one."""
    database = f"sqlite:///{Path(log.name).resolve().parent / 'gw.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "compiler.cli", "serve", file, "--port", str(port), *flags],
        env={**os.environ, "GW_DB_URL": database, **(env or {})}, stderr=log, text=True)
    deadline = time.monotonic() + wait
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("gwc serve did not start: " + Path(log.name).read_text())
        time.sleep(0.1)


ECHOES = ("echo", "echo-unclosed")


@dataclass
class Script:
    """What a fake does for a model name.

    `ok...` answers "hello from MODEL", streamed a word a chunk; `echo` answers the
    text of the last message, streamed four characters a chunk (`said`, `pieces`),
    and `echo-unclosed` the same with no closing chunk (neither a finish reason nor
    usage) before `[DONE]` (chat completions only);
    `error-NNN` answers that status; `limited` answers 429 with
    Retry-After: 1 on its first call and then answers; `slow` waits 3 s; `cut`
    streams two chunks and drops the connection; `down` answers 503 while
    `down` is set; `hang` never answers, and notes in `abandoned` when its
    caller hangs up. Every call is counted by model, with its headers kept.
    """

    down: bool = True
    calls: dict[str, int] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)

    def record(self, model: str, headers: dict[str, str], body: dict[str, Any]) -> int:
        self.calls[model] = self.calls.get(model, 0) + 1
        self.times.setdefault(model, []).append(time.monotonic())
        self.headers.append(headers)
        self.bodies.append(body)
        return self.calls[model]

    async def hang(self, model: str, receive: Any) -> None:
        """Wait (up to 10 s) for the caller to hang up, and note that it did.

        Once the body is read, the server's next message is the disconnect.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.abandoned.append(model)

    @staticmethod
    def said(model: str, last: Any) -> str:
        """What the fake answers: `last` is the last message's content (a string or
        parts), which `echo` says back."""
        if model not in ECHOES:
            return f"hello from {model}"
        if isinstance(last, str):
            return last
        return "".join(part.get("text", "") for part in last or ()
                       if isinstance(part, dict) and isinstance(part.get("text"), str))

    @staticmethod
    def pieces(model: str, text: str) -> list[str]:
        """A streamed answer's pieces: words, or `echo`'s four characters at a time."""
        if model in ECHOES:
            return [text[i:i + 4] for i in range(0, len(text), 4)]
        words = text.split()
        return [word if i == 0 else " " + word for i, word in enumerate(words)]

    async def failure(self, model: str, call: int) -> tuple[int, dict[str, str]] | None:
        """The status (and headers) to fail with, or None to answer normally."""
        if model.startswith("error-"):
            return int(model.split("-")[1]), {}
        if model == "limited" and call == 1:
            return 429, {"retry-after": "1"}
        if model == "down" and self.down:
            return 503, {}
        if model == "slow":
            await asyncio.sleep(3)
        return None
