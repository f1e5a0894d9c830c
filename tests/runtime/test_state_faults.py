"""The shared state under faults: a replica killed mid-call, Redis stopped and started
under load, a gateway restarted on an exhausted budget.

Each runs real `gwc serve` processes: a replica that dies by SIGKILL leaves its
reservations in Redis, and only their leases end them (GW_MIN_LEASE makes that
a second here, not the default minute); a Redis that goes away makes each
quota and budget do what its `on_store_error` says; a restart rebuilds spend
from the ledger.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from policies.ledger import Ledger
from policies.records import open_records
from policies.redis_counters import RedisCounters
from tests.fakes import free_port, gwc_serve
from tests.runtime.test_cluster import Cluster, key_for, openai_error, start
from tests.services import RedisServer

HI = {"messages": [{"role": "user", "content": "hi"}]}
COST = 1 * 100e-6 + 4 * 200e-6  # "hi" in, "mock reply from mock-a" out
MOST = 1 * 100e-6 + 5 * 200e-6  # reserved with max_tokens = 5

MODEL = """
provider local {{
  type    = mock
  latency = {latency}
  retry {{ attempts = 1 }}
}}
model a {{ provider = local; name = "mock-a"; input = $100/1M; output = $200/1M; timeout = 1s }}
route {{
  otherwise -> a
}}
"""


# ------------------------------------------------------------------ a replica killed

KILLED = MODEL + """
budget per team {{
  limit = $10 per day
}}
auth {{ mode = keys }}
"""


def budget_counter(redis_url: str) -> str:
    """The one budget counter in Redis, by its key `{gw}:b:<period>:<counter>`."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = [k for k in client.scan_iter("{gw}:b:*") if not k.startswith("{gw}:bl:")]
    finally:
        client.close()
    assert len(keys) == 1, keys
    return str(keys[0]).split(":", 3)[3]


async def reserved(redis: RedisCounters, counter: str, limit: float) -> tuple[float, float]:
    """(settled spend, what live reservations hold) of the budget, as Redis has them."""
    now = time.time()
    share = (await redis.share([(counter, limit, "day")], now))[counter]
    spent = await redis.spent(counter, "day", now)
    return spent, share * limit - spent


def test_a_killed_replica_leaks_no_reservation_and_loses_no_settled_spend(
        tmp_path: Path, redis_url: str, postgres_url: str) -> None:
    policy = tmp_path / "policy.gw"
    policy.write_text(KILLED.format(latency="300ms"))
    victim_key, victim_secret = key_for(postgres_url, "kill")
    survivor_key, survivor_secret = key_for(postgres_url, "kill")
    cluster = start(policy, 2, {"GW_STATE_URL": redis_url, "GW_DB_URL": postgres_url,
                                "GW_MIN_LEASE": "1"}, tmp_path)
    try:
        survived, in_flight, lapsed = asyncio.run(_kill_under_load(
            cluster, redis_url, victim_secret, survivor_secret))
    finally:
        cluster.stop()  # the survivor flushes its ledger rows
    statuses = Counter(status for status, _ in survived)
    assert set(statuses) == {200}, statuses
    survivor_cost = sum(cost for _, cost in survived)
    records = open_records(postgres_url)
    try:
        by_key = {row["subject"]: row for row in Ledger(records).spend_report("key")}
    finally:
        records.close()
    spent, held = lapsed
    print(f"\nkill -9 mid-load: reservations held just after ${in_flight:.6f}, "
          f"{held:.6f} a lease later; survivor served {statuses[200]} (${survivor_cost:.6f}),"
          f" ledger has {by_key[survivor_key]['requests']} (${by_key[survivor_key]['usd']:.6f});"
          f" Redis settled ${spent:.6f}")
    assert in_flight >= 5 * MOST - 1e-9  # the victim died holding reservations
    assert held == pytest.approx(0, abs=1e-9)  # and they lapsed with their lease
    assert by_key[survivor_key]["requests"] == statuses[200]  # nothing it settled is lost
    assert by_key[survivor_key]["usd"] == pytest.approx(survivor_cost)
    victim_rows = by_key.get(victim_key, {"usd": 0.0})["usd"]
    assert spent >= survivor_cost + victim_rows - 1e-9  # Redis counted every settle it got


async def _kill_under_load(cluster: Cluster, redis_url: str, victim_secret: str,
                           survivor_secret: str
                           ) -> tuple[list[tuple[int, float]], float, tuple[float, float]]:
    """Ten callers on each replica; the first replica killed by SIGKILL 0.7 s in, the
    other's callers going on for a second more. Answers the survivor's (status, cost)
    pairs, what reservations held just after the kill, and (settled, held) once the
    lease has passed."""
    victim, survivor = cluster.processes
    survived: list[tuple[int, float]] = []
    redis = RedisCounters(redis_url)
    ends = time.monotonic() + 1.7
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async def caller(url: str, secret: str, out: list[tuple[int, float]] | None) -> None:
                headers = {"authorization": f"Bearer {secret}"}
                while time.monotonic() < ends:
                    try:
                        async with http.post(url + "/v1/chat/completions", headers=headers,
                                             json={"model": "a", "max_tokens": 5, **HI}) as r:
                            await r.read()
                            if out is not None:
                                out.append((r.status, float(r.headers.get("x-gw-cost", 0))))
                    except aiohttp.ClientError:
                        if out is not None:
                            raise
                        return  # the victim is gone

            callers = [asyncio.create_task(caller(cluster.urls[0], victim_secret, None))
                       for _ in range(10)]
            callers += [asyncio.create_task(caller(cluster.urls[1], survivor_secret, survived))
                        for _ in range(10)]
            await asyncio.sleep(0.7)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            counter = budget_counter(redis_url)
            _, in_flight = await reserved(redis, counter, 10.0)
            await asyncio.gather(*callers)
            assert survivor.poll() is None
            deadline = time.monotonic() + 5  # the lease is a second; settles come after
            while True:
                lapsed = await reserved(redis, counter, 10.0)
                if abs(lapsed[1]) < 1e-9 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
    finally:
        await redis.close()
    return survived, in_flight, lapsed


# ------------------------------------------------------------------ Redis down and back

OUTAGE = MODEL + """
budget per team {{
  limit          = $100 per day
  on_store_error = {mode}
}}
quota per team {{
  requests       = 100000 per minute
  on_store_error = {mode}
}}
auth {{
  mode        = headers
  team_header = "x-team"
}}
"""


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


class Load:
    """Two callers sending requests one after another, every answer kept with its time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[float, int, str | None]] = []  # (time, status, error code)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._call) for _ in range(2)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def _call(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stopping.is_set():
                reply = http.post(self.url + "/v1/chat/completions", headers={"x-team": "t"},
                                  json={"model": "a", "max_tokens": 5, **HI})
                code = openai_error(reply)["code"] if reply.status_code != 200 else None
                self.answers.append((time.monotonic(), reply.status_code, code))

    def since(self, at: float) -> list[tuple[float, int, str | None]]:
        return [answer for answer in list(self.answers) if answer[0] >= at]

    def wait_for(self, at: float, count: int, timeout: float = 10) -> None:
        """Until `count` answers came after `at`."""
        deadline = time.monotonic() + timeout
        while len(self.since(at)) < count:
            assert time.monotonic() < deadline, f"only {len(self.since(at))} answers"
            time.sleep(0.02)


def readiness(url: str) -> tuple[str, float]:
    """(/readyz's status, /metrics' gw_state_degraded)."""
    ready = httpx.get(url + "/readyz").json()["status"]
    found = re.search(r"^gw_state_degraded (\S+)$", httpx.get(url + "/metrics").text, re.M)
    assert found is not None
    return ready, float(found.group(1))


def until(check: Any, timeout: float = 10) -> Any:
    """`check()` once it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "never came"
        time.sleep(0.05)
    return value


@pytest.mark.parametrize("mode", ["refuse", "local"])
def test_redis_stopped_and_started_under_load(tmp_path: Path, own_redis: RedisServer, mode: str
                                              ) -> None:
    policy = tmp_path / "policy.gw"
    policy.write_text(OUTAGE.format(latency="5ms", mode=mode))
    log_path = tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = gwc_serve(str(policy), port, log, env={"GW_STATE_URL": own_redis.url})
        try:
            with Load(url) as load:
                load.wait_for(0, 20)
                assert {status for _, status, _ in load.answers} == {200}
                assert readiness(url) == ("ready", 0)
                own_redis.kill()
                down = time.monotonic()
                load.wait_for(down + 0.2, 40)  # past the calls in flight when it stopped
                if mode == "local":
                    assert readiness(url) == ("degraded", 1)
                restarting = time.monotonic()
                own_redis.start()
                up = time.monotonic()
                # service resumes (refuse) and degraded clears once Redis answers again
                until(lambda: readiness(url) == ("ready", 0))
                back = time.monotonic()
                load.wait_for(back + 0.2, 20)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
    during = Counter((status, code) for at, status, code in load.answers
                     if down + 0.2 < at < restarting)
    after = Counter((status, code) for _, status, code in load.since(back + 0.2))
    print(f"\non_store_error = {mode}: while Redis was down {dict(during)}; restarted, "
          f"ready again after {back - up:.2f} s, then {dict(after)}")
    everything = Counter(status for _, status, _ in load.answers)
    assert set(everything) <= {200, 503}, everything  # never a 500
    if mode == "refuse":
        assert set(during) == {(503, "state_unavailable")}, during
    else:
        assert set(during) == {(200, None)}, during
    assert set(after) == {(200, None)}, after
    text = log_path.read_text()
    assert "Traceback" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(line.get("status") != 500 for line in lines)
    states = [line["degraded"] for line in lines if line.get("event") == "state"]
    assert states[0] is True and states[-1] is False, states


# ------------------------------------------------------------------ a restart

EXHAUSTED = MODEL + """
budget per team {{
  limit = $0.003 per day
}}
auth {{
  mode        = headers
  team_header = "x-team"
}}
"""


def test_a_restart_keeps_an_exhausted_budget_exhausted(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GW_STATE_URL", raising=False)  # memory counters: the ledger rebuilds
    policy = tmp_path / "policy.gw"
    policy.write_text(EXHAUSTED.format(latency="0ms"))

    def ask(url: str, team: str) -> httpx.Response:
        return httpx.post(url + "/v1/chat/completions", headers={"x-team": team},
                          json={"model": "a", "max_tokens": 5, **HI})

    statuses: list[int] = []
    for run in ("first", "second"):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with (tmp_path / f"{run}.log").open("w") as log:  # one folder: one SQLite database
            process = gwc_serve(str(policy), port, log)
            try:
                if run == "first":
                    while len(statuses) < 10 and 402 not in statuses:
                        statuses.append(ask(url, "spender").status_code)
                    assert statuses == [200, 200, 200, 402], statuses  # $0.0027, then no room
                else:
                    after = ask(url, "spender")
                    assert after.status_code == 402, after.text
                    assert openai_error(after)["code"] == "budget_exceeded"
                    assert ask(url, "other").status_code == 200  # a fresh team still spends
            finally:
                process.send_signal(signal.SIGTERM)
                assert process.wait(30) == 0


@pytest.mark.parametrize("value", ["soon", "0"])
def test_a_min_lease_that_is_not_seconds_is_refused_at_start(tmp_path: Path, value: str) -> None:
    policy = tmp_path / "policy.gw"
    policy.write_text(EXHAUSTED.format(latency="0ms"))
    result = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "serve", str(policy), "--port", str(free_port())],
        env={**os.environ, "GW_MIN_LEASE": value, "GW_DB_URL": f"sqlite:///{tmp_path}/gw.db"},
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"gwc: GW_MIN_LEASE must be a number of seconds > 0; got '{value}'\n"
