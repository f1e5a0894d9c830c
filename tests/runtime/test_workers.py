"""`gwc serve --workers N`: N processes on one port, counting together through Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.fakes import free_port, gwc_serve

POLICY = """
provider local { type = mock; latency = 20ms }
model a { provider = local }
route { otherwise -> a }
auth { mode = headers }
quota per team { requests = 30 per minute }
"""
HI = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}


def test_workers_share_one_port_and_one_quota(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "policy.gw"
    path.write_text(POLICY)
    port = free_port()
    with (tmp_path / "serve.log").open("w") as log:
        process = gwc_serve(str(path), port, log, "--workers", "2",
                            env={"GW_STATE_URL": redis_url})
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                statuses = [client.post("/v1/chat/completions", json=HI,
                                        headers={"x-gw-team": "t", "connection": "close"}
                                        ).status_code for _ in range(40)]
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
    assert statuses.count(200) == 30 and statuses.count(429) == 10  # one quota, not two
    lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    assert len({line["pid"] for line in lines if line.get("event") == "serving"}) == 2


def test_more_than_one_worker_needs_shared_counters(tmp_path: Path) -> None:
    path = tmp_path / "policy.gw"
    path.write_text(POLICY)
    result = subprocess.run([sys.executable, "-m", "compiler.cli", "serve", str(path),
                             "--workers", "2", "--port", str(free_port())],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "GW_STATE_URL": "memory"})
    assert result.returncode == 2 and "GW_STATE_URL" in result.stderr
