"""`gwc serve` as a process: hot reload under load, SIGHUP, SIGTERM, the auth guard."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes import free_port, gwc_serve

ADMIN = {"authorization": "Bearer admin-secret"}
HI = {"messages": [{"role": "user", "content": "hi"}]}


def policy(target: str, latency: str = "0ms", auth: str = "none") -> str:
    return f"""
provider local {{
  type    = mock
  latency = {latency}
}}
model a {{ provider = local; name = "mock-a" }}
model b {{ provider = local; name = "mock-b" }}
route {{
  otherwise -> {target}
}}
auth {{ mode = {auth} }}
"""


def write(path: Path, text: str) -> None:
    """Replace the file in one step, as editors and deploy tools do."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    path = tmp_path / "policy.gw"
    path.write_text(policy("a", latency="5ms"))
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = gwc_serve(str(path), port, log, "--watch", env={"GW_ADMIN_KEY": "admin-secret"})
    url = f"http://127.0.0.1:{port}"
    yield url, path, process
    if process.poll() is None:
        process.terminate()
        process.wait(30)
    log.close()


def served_by(url: str) -> str:
    reply = httpx.post(url + "/v1/chat/completions", json={"model": "x", **HI})
    return reply.headers.get("x-gw-model", f"status {reply.status_code}")


def test_fifty_reloads_under_load_drop_nothing(server: tuple[str, Path, subprocess.Popen[str]]
                                               ) -> None:
    url, path, _ = server
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    reply = http.post(url + "/v1/chat/completions", json={"model": "x", **HI})
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if reply.status_code != 200:
                    failures.append(f"{reply.status_code} {reply.text[:100]}")
                outcomes[reply.headers.get("x-gw-model", "?")] += 1

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    moved = 0
    try:
        for i in range(50):
            if i % 5 == 4:  # every fifth version is broken and must be refused
                write(path, policy("a").replace("otherwise -> a", "otherwise -> missing"))
                deadline = time.monotonic() + 10
                while httpx.get(url + "/admin/policy", headers=ADMIN).json()["refused"] is None:
                    assert time.monotonic() < deadline, "the broken policy was not refused"
                    time.sleep(0.05)
                continue
            target = "b" if served_by(url) == "a" else "a"
            write(path, policy(target, latency="5ms"))
            deadline = time.monotonic() + 10
            while served_by(url) != target:
                assert time.monotonic() < deadline, f"the route did not move to {target}"
                time.sleep(0.05)
            moved += 1
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert failures == []
    assert moved == 40 and outcomes["a"] > 0 and outcomes["b"] > 0
    assert sum(outcomes.values()) > 200


def test_no_answer_names_the_http_server(server: tuple[str, Path, subprocess.Popen[str]]
                                         ) -> None:
    url, _, _ = server
    for reply in (httpx.post(url + "/v1/chat/completions", json={"model": "x", **HI}),
                  httpx.get(url + "/healthz"), httpx.get(url + "/no/such/route")):
        assert "server" not in reply.headers and "date" in reply.headers, reply.headers


def test_sighup_reloads(server: tuple[str, Path, subprocess.Popen[str]]) -> None:
    url, path, process = server
    path.write_text(policy("b"))  # in place; the watcher may also see it, either is fine
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while served_by(url) != "b":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_sigterm_drains_requests_in_flight(server: tuple[str, Path, subprocess.Popen[str]]
                                           ) -> None:
    url, path, process = server
    write(path, policy("a", latency="1500ms"))
    deadline = time.monotonic() + 10
    while httpx.get(url + "/admin/policy", headers=ADMIN).json()["version"] == "" or \
            "1500ms" not in path.read_text():
        assert time.monotonic() < deadline
    time.sleep(1.0)  # let the watcher load it
    result: dict[str, int] = {}

    def slow_request() -> None:
        reply = httpx.post(url + "/v1/chat/completions", json={"model": "x", **HI}, timeout=20)
        result["status"] = reply.status_code

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.5)  # in flight now
    process.send_signal(signal.SIGTERM)
    thread.join(20)
    assert result == {"status": 200}
    assert process.wait(20) == 0


def test_auth_none_is_refused_off_loopback(tmp_path: Path) -> None:
    path = tmp_path / "open.gw"
    path.write_text(policy("a"))
    result = subprocess.run([sys.executable, "-m", "compiler.cli", "serve", str(path),
                             "--host", "0.0.0.0", "--port", str(free_port())],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--insecure" in result.stderr


def test_a_keys_policy_answers_401_with_the_sdks_class(
        server: tuple[str, Path, subprocess.Popen[str]]) -> None:
    import openai

    url, path, process = server
    path.write_text(policy("a", auth="keys"))
    process.send_signal(signal.SIGHUP)
    client = openai.OpenAI(base_url=url + "/v1", api_key="gw-not-issued", max_retries=0)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.chat.completions.create(model="x", messages=HI["messages"])  # type: ignore[arg-type]
        except openai.AuthenticationError as error:
            assert error.status_code == 401 and "unknown API key" in error.message
            assert "gw-not-issued" not in str(error.body)  # the key is never echoed
            return
        assert time.monotonic() < deadline, "the keys policy was not loaded"
        time.sleep(0.05)


def test_every_line_on_stderr_is_whole_json(tmp_path: Path,
                                            server: tuple[str, Path, subprocess.Popen[str]]
                                            ) -> None:
    """Access lines, reload messages (from --watch and SIGHUP) and the lifecycle, all
    through the one writer: none splices into another."""
    url, path, process = server
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                http.post(url + "/v1/chat/completions", json={"model": "x", **HI})

    clients = [threading.Thread(target=client) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        for i in range(3):
            write(path, policy("b" if i % 2 else "a", latency=f"{i}ms"))
            time.sleep(0.3)
            process.send_signal(signal.SIGHUP)
            time.sleep(0.2)
        # a reload still compiling when the gateway stops is dropped, not logged: wait
        # for one of each kind to land, as long as compiling takes on this machine
        deadline = time.monotonic() + 30
        while not {"watch", "sighup"} <= {
                json.loads(line).get("trigger") for line in
                (tmp_path / "serve.log").read_text().splitlines() if '"reload"' in line}:
            assert time.monotonic() < deadline, "no reload landed"
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    assert lines[0]["event"] == "serving" and lines[0]["url"] == url
    assert lines[0]["message"].startswith("gwc: serving ") and url in lines[0]["message"]
    reloads = [line for line in lines if line.get("event") == "reload"]
    assert {line["trigger"] for line in reloads} == {"watch", "sighup"}
    assert all(line["message"].startswith("gwc: reload loaded: ") for line in reloads)
    assert sum("request_id" in line for line in lines) > 50
    assert [line["event"] for line in lines[-2:]] == ["stopping", "stopped"]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`gwc serve` with small HTTP limits: a 2 KiB head, a half-second read timeout."""
    path = tmp_path / "policy.gw"
    path.write_text(policy("a"))
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "compiler.cli", "serve", str(path), "--port", str(port)],
            env={**os.environ, "GW_MAX_HEADER_BYTES": "2048", "GW_REQUEST_READ_TIMEOUT": "0.5"},
            stderr=stderr, text=True)
        deadline = time.monotonic() + 20
        while not log.read_text().strip():
            assert time.monotonic() < deadline and process.poll() is None, \
                "gwc serve did not start"
            time.sleep(0.05)
        yield port, log
        process.terminate()
        process.wait(30)


def test_serve_applies_its_http_limits(limited: tuple[int, Path]) -> None:
    port, log = limited
    version = httpx.get(f"http://127.0.0.1:{port}/readyz").json()["policy"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 2048 + b"\r\n\r\n")
        reply = sock.recv(65536).decode()
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 431 ")
    assert f"x-gw-policy: {version}" in head and "x-gw-request-id: " in head
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and no more
        reply = sock.recv(65536).decode()
        assert reply.startswith("HTTP/1.1 408 ") and time.monotonic() - started < 3
    first = json.loads(log.read_text().splitlines()[0])
    assert first["max_header_bytes"] == 2048 and first["read_timeout"] == 0.5


def test_serve_refuses_a_malformed_limit(tmp_path: Path) -> None:
    path = tmp_path / "policy.gw"
    path.write_text(policy("a"))
    result = subprocess.run([sys.executable, "-m", "compiler.cli", "serve", str(path),
                             "--port", str(free_port())],
                            env={**os.environ, "GW_REQUEST_READ_TIMEOUT": "30s"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "GW_REQUEST_READ_TIMEOUT" in result.stderr


def test_a_compiled_graph_is_served_and_watched(tmp_path: Path) -> None:
    source = tmp_path / "policy.gw"
    source.write_text(policy("a"))
    graph = tmp_path / "graph.json"
    compiled = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", str(source),
                               "-o", str(graph)], capture_output=True, text=True, timeout=60)
    assert compiled.returncode == 0, compiled.stderr
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = gwc_serve(str(graph), port, log, "--watch")
    url = f"http://127.0.0.1:{port}"
    try:
        assert served_by(url) == "a"
        source.write_text(policy("b"))  # recompiled and rewritten: the watch reloads it
        assert subprocess.run([sys.executable, "-m", "compiler.cli", "compile", str(source),
                               "-o", str(graph)], capture_output=True, timeout=60).returncode == 0
        deadline = time.monotonic() + 10
        while served_by(url) != "b":
            assert time.monotonic() < deadline, "the new graph was not loaded"
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_a_graph_file_that_is_not_one_is_refused_at_start(tmp_path: Path) -> None:
    graph = tmp_path / "graph.json"
    graph.write_text('{"format": "gwc-graph/1", "nodes": "no"}')
    result = subprocess.run([sys.executable, "-m", "compiler.cli", "serve", str(graph),
                             "--port", str(free_port())], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1 and "not a gwc graph" in result.stderr
