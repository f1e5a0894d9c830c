"""Three `gwc serve` replicas sharing the real Redis and PostgreSQL, as a deployment runs.

What the replicas share must hold across them, not per replica: a budget is not
overspent by three processes reserving at once, a quota admits its number in all,
a revoked key is refused everywhere within a second, and a budget alert is sent
once however many replicas cross its threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from policies.keys import Keys
from policies.ledger import Ledger
from policies.records import open_records
from tests import services
from tests.fakes import free_port

ADMIN_KEY = "admin-secret"
HI = {"messages": [{"role": "user", "content": "hi"}]}
LIMIT = 0.04  # USD a day
# "hi" is one token in, the mock's "mock reply from mock-a" four out: $0.0009 a request,
# and with max_tokens = 5 at most $0.0011 is reserved: about 44 requests fit the budget.
MOST = 1 * 100e-6 + 5 * 200e-6
COST = 1 * 100e-6 + 4 * 200e-6

POLICY = """
provider local {{
  type    = mock
  latency = 20ms
}}
model a {{ provider = local; name = "mock-a"; input = $100/1M; output = $200/1M; timeout = 5s }}
route {{
  otherwise -> a
}}
budget per team when team in ["spend", "alerts"] {{
  limit  = ${limit} per day
  alert  = [50%, 80%]
  notify = hook
}}
quota per team when team == "quota" {{
  requests = 100 per minute
}}
notify hook {{
  webhook = "{hook}"
  format  = json
}}
auth {{ mode = keys }}
"""


@dataclass
class Hook:
    """A webhook receiver on loopback: every POST's JSON body, in arrival order."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def webhook() -> Iterator[Hook]:
    hook = Hook("")

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            hook.posts.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Cluster:
    urls: list[str]
    processes: list[subprocess.Popen[str]]
    logs: list[Path]

    def stop(self) -> None:
        """SIGTERM every replica: each drains, settles and flushes its ledger rows."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def log_text(self) -> str:
        return "\n".join(log.read_text() for log in self.logs)


def start(policy: Path, count: int, env: dict[str, str], folder: Path,
          wait: float = 30) -> Cluster:
    """`count` replicas of `gwc serve policy`, started at once, each on its own port."""
    ports = [free_port() for _ in range(count)]
    logs = [folder / f"replica-{i}.log" for i in range(count)]
    processes = []
    for port, log in zip(ports, logs, strict=True):
        with log.open("w") as stderr:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "compiler.cli", "serve", str(policy), "--port", str(port)],
                env={**os.environ, **env}, stderr=stderr, text=True))
    cluster = Cluster([f"http://127.0.0.1:{port}" for port in ports], processes, logs)
    deadline = time.monotonic() + wait
    for url, process in zip(cluster.urls, processes, strict=True):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                cluster.stop()
                raise RuntimeError("a replica did not start: " + cluster.log_text())
            time.sleep(0.05)
    return cluster


@pytest.fixture(scope="module")
def shared() -> Iterator[dict[str, str]]:
    """The real Redis (db 15, flushed) and a PostgreSQL schema of its own, as
    tests/services.py gives them, but once for the module's one cluster: starting
    three replicas is most of a test's time."""
    import psycopg
    import redis

    client = redis.Redis.from_url(services.REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        services.unavailable("Redis", exc)
    client.flushdb()
    schema = f"gwtest_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(services.POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as exc:
        services.unavailable("PostgreSQL", exc)
    separator = "&" if "?" in services.POSTGRES_URL else "?"
    yield {"GW_STATE_URL": services.REDIS_URL, "GW_ADMIN_KEY": ADMIN_KEY,
           "GW_DB_URL": f"{services.POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"}
    with psycopg.connect(services.POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def hook() -> Iterator[Hook]:
    with webhook() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def keys(shared: dict[str, str]) -> dict[str, tuple[str, str]]:
    """A key per test's team, (id, secret), made before the replicas start: one made
    after is refused until each replica's next refresh of the keys (every 0.25 s)."""
    return {team: key_for(shared["GW_DB_URL"], team)
            for team in ("spend", "quota", "revoke", "alerts")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, shared: dict[str, str], hook: Hook,
            keys: dict[str, tuple[str, str]]) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("cluster")
    policy = folder / "policy.gw"
    policy.write_text(POLICY.format(limit=LIMIT, hook=hook.url))
    replicas = start(policy, 3, shared, folder)
    try:
        yield replicas
    finally:
        replicas.stop()


def key_for(db_url: str, team: str) -> tuple[str, str]:
    """A new virtual key for `team`: (id, secret)."""
    records = open_records(db_url)
    try:
        record, secret = Keys(records).create_key(team)
    finally:
        records.close()
    return record.id, secret


@dataclass(frozen=True)
class Reply:
    status_code: int
    headers: dict[str, str]  # lowercased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def fire(urls: list[str], secret: str, count: int, **body: Any) -> list[Reply]:
    """`count` chat requests at once, the i-th to replica i mod len(urls) (aiohttp: an
    httpx client's own overhead spread 300 requests over seconds on this machine)."""
    headers = {"authorization": f"Bearer {secret}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        async def one(i: int) -> Reply:
            async with http.post(urls[i % len(urls)] + "/v1/chat/completions",
                                 headers=headers, json={"model": "a", **HI, **body}) as reply:
                return Reply(reply.status, {k.lower(): v for k, v in reply.headers.items()},
                             await reply.read())
        return list(await asyncio.gather(*(one(i) for i in range(count))))


def openai_error(reply: Reply | httpx.Response) -> dict[str, Any]:
    body = reply.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "code", "param"} <= set(body["error"]), body
    error: dict[str, Any] = body["error"]
    return error


def spend(db_url: str, team: str) -> dict[str, Any]:
    records = open_records(db_url)
    try:
        report = Ledger(records).spend_report("team")
    finally:
        records.close()
    return next((row for row in report if row["subject"] == team),
                {"subject": team, "usd": 0.0, "requests": 0, "tokens": 0})


def settled_spend(db_url: str, team: str, requests: int) -> dict[str, Any]:
    """The team's spend in the ledger once `requests` rows are there (each replica's
    writer flushes every half second), or what is there after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        found = spend(db_url, team)
        if found["requests"] >= requests or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def access_lines(cluster: Cluster, key_id: str, count: int) -> list[dict[str, Any]]:
    """The replicas' access lines for one key, once there are `count` (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for log in cluster.logs
                 for line in log.read_text().splitlines(keepends=True)
                 if line.endswith("\n")]  # a line being written waits for the next look
        mine = [line for line in lines if line.get("key") == key_id]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.1)


def test_three_replicas_do_not_overspend_a_budget(
        cluster: Cluster, shared: dict[str, str], keys: dict[str, tuple[str, str]]) -> None:
    _, secret = keys["spend"]
    replies = asyncio.run(fire(cluster.urls, secret, 300, max_tokens=5))
    statuses = Counter(reply.status_code for reply in replies)
    assert set(statuses) <= {200, 402}, statuses
    for reply in replies:
        if reply.status_code == 402:
            assert openai_error(reply)["code"] == "budget_exceeded"
    served = [reply for reply in replies if reply.status_code == 200]
    by_replica = Counter(i % 3 for i, reply in enumerate(replies) if reply.status_code == 200)
    charged = sum(float(reply.headers["x-gw-cost"]) for reply in served)
    settled = settled_spend(shared["GW_DB_URL"], "spend", len(served))
    print(f"\n300 requests at once over 3 replicas: {statuses[200]} served "
          f"({dict(sorted(by_replica.items()))} by replica), {statuses[402]} refused 402; "
          f"settled ${settled['usd']:.6f} of ${LIMIT} (one request at most ${MOST:.6f})")
    assert settled["requests"] == statuses[200]
    assert settled["usd"] == pytest.approx(charged) == pytest.approx(statuses[200] * COST)
    assert 0.8 * LIMIT <= settled["usd"] <= LIMIT + MOST
    assert statuses[402] > 0


def test_a_quota_admits_exactly_its_number_across_three(
        cluster: Cluster, keys: dict[str, tuple[str, str]]) -> None:
    key_id, secret = keys["quota"]
    replies = asyncio.run(fire(cluster.urls, secret, 200))
    statuses = Counter(reply.status_code for reply in replies)
    assert set(statuses) == {200, 429}, statuses
    by_replica = Counter(i % 3 for i, reply in enumerate(replies) if reply.status_code == 200)
    for reply in replies:
        if reply.status_code == 429:
            assert int(reply.headers["retry-after"]) >= 1
            assert openai_error(reply)["code"] == "rate_limit_exceeded"
        assert reply.headers["x-ratelimit-limit-requests"] == "100"
    # 100 per minute is a rate (GCRA): a fresh counter admits 100 at once and one more
    # each 0.6 s after. The replicas' own logs say over how long the requests came in.
    lines = access_lines(cluster, key_id, len(replies))
    arrivals = [line["ts"] - line["ms"] / 1000 for line in lines]
    span = max(arrivals) - min(arrivals)
    print(f"\n200 requests round-robin over 3 replicas, arriving over {span:.2f} s: "
          f"{statuses[200]} admitted ({dict(sorted(by_replica.items()))} by replica), "
          f"{statuses[429]} refused 429")
    assert len(lines) == len(replies)
    assert 100 <= statuses[200] <= 100 + int(span / 0.6)
    if span < 0.6:
        assert statuses[200] == 100


def test_a_revoked_key_is_refused_by_every_replica_within_a_second(
        cluster: Cluster, keys: dict[str, tuple[str, str]]) -> None:
    key_id, secret = keys["revoke"]
    headers = {"authorization": f"Bearer {secret}"}
    with httpx.Client(timeout=10) as http:
        def status(url: str) -> int:
            return http.post(url + "/v1/chat/completions", headers=headers,
                             json={"model": "a", **HI}).status_code

        assert [status(url) for url in cluster.urls] == [200, 200, 200]
        revoked = http.delete(f"{cluster.urls[0]}/admin/keys/{key_id}",
                              headers={"authorization": f"Bearer {ADMIN_KEY}"})
        at = time.monotonic()
        assert revoked.status_code == 200 and revoked.json() == {"id": key_id, "revoked": True}
        refused: dict[str, float] = {}
        while len(refused) < len(cluster.urls) and time.monotonic() - at < 3:
            for url in cluster.urls:
                if url in refused:
                    continue
                reply = http.post(url + "/v1/chat/completions", headers=headers,
                                  json={"model": "a", **HI})
                if reply.status_code == 401:
                    refused[url] = time.monotonic() - at
                    assert openai_error(reply)["code"] == "invalid_api_key"
                else:
                    assert reply.status_code == 200, reply.text
            time.sleep(0.01)
    print("\nrevoked key refused by the three after "
          + ", ".join(f"{seconds * 1000:.0f} ms" for seconds in sorted(refused.values())))
    assert len(refused) == 3 and max(refused.values()) < 1.0, refused


def test_each_alert_reaches_the_webhook_once_from_three_replicas(
        cluster: Cluster, keys: dict[str, tuple[str, str]], hook: Hook) -> None:
    _, secret = keys["alerts"]
    replies = asyncio.run(fire(cluster.urls, secret, 120, max_tokens=5))
    assert {reply.status_code for reply in replies} <= {200, 402}

    def mine() -> list[dict[str, Any]]:
        return [post for post in hook.posts if post.get("subject") == "team=alerts"]
    deadline = time.monotonic() + 10
    while len(mine()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a second post for a threshold, were one coming, would be here by now
    posts = mine()
    print(f"\nwebhook posts for team=alerts: {posts}")
    assert Counter(post["threshold"] for post in posts) == {0.5: 1, 0.8: 1}, hook.posts
    for post in posts:
        assert set(post) == {"subject", "period", "spent", "limit", "threshold"}, post
        assert post["limit"] == LIMIT and post["spent"] >= post["threshold"] * LIMIT - 1e-12
        assert post["period"] == time.strftime("%Y-%m-%d", time.gmtime())
    # the budget of the overspend test crossed both thresholds too, also sent once each
    others = Counter(post["threshold"] for post in hook.posts if post not in posts)
    assert all(count == 1 for count in others.values()), hook.posts
