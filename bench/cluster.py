"""N replicas of `gwc serve` on one machine, sharing Redis and PostgreSQL, as a deployment would.

    python -m bench.cluster                          # 3 replicas of a demo policy on 8100-8102
    python -m bench.cluster POLICY.gw --replicas 5 --port 9000
    python -m bench.cluster --requests 300           # and fire 300 requests at once, round-robin
    GW_DB_URL=sqlite:///.gw/cluster.db python -m bench.cluster

The replicas share their counters through `GW_STATE_URL` (default
redis://127.0.0.1:6379/0) and their keys, ledger and request log through
`GW_DB_URL` (default postgresql://postgres@127.0.0.1:5432/test); `--redis` and
`--db` override both. Each listens on its own port, so any load balancer (or
a client that round-robins, as `--requests` does) can be put in front. Their
URLs are printed once every one answers /readyz, and each one's log goes to a
file of its own (the paths are printed too). Ctrl-C stops them: each drains
its requests in flight and flushes its ledger, as SIGTERM makes it.

Without a POLICY, a demo is served: a mock model that answers without a
network, a team budget of $0.04 a day and a quota of 100 requests a minute per
team, teams named by the `x-team` header. `--requests N` sends N requests at
once as team `bench` and prints what came back, by status and by replica, and
the team's settled spend from the ledger; the budget and the quota hold across
the replicas, which is the point (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

DEMO = """
provider local {
  type    = mock
  latency = 20ms
}
model a { provider = local; name = "mock-a"; input = $100/1M; output = $200/1M; timeout = 5s }
route {
  otherwise -> a
}
budget per team {
  limit = $0.04 per day
}
quota per team {
  requests = 100 per minute
}
auth {
  mode        = headers
  team_header = "x-team"
}
"""
REDIS = "redis://127.0.0.1:6379/0"
DATABASE = "postgresql://postgres@127.0.0.1:5432/test"


def check_stores(redis_url: str, db_url: str) -> str | None:
    """What is wrong with the shared stores, or None: said before anything starts."""
    import redis

    from policies.records import RecordsError, open_records

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis at {redis_url} does not answer: {exc}"
    finally:
        client.close()
    try:
        open_records(db_url).close()  # migrated once here, not by N replicas at once
    except RecordsError as exc:
        return str(exc)
    return None


def start(policy: Path, replicas: int, port: int, env: dict[str, str], logs: Path
          ) -> list[tuple[str, subprocess.Popen[bytes], Path]]:
    """The replicas, each in a session of its own, so that Ctrl-C reaches this script
    only, and it stops them in order."""
    started = []
    for i in range(replicas):
        log = logs / f"replica-{i}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "compiler.cli", "serve", str(policy),
                 "--port", str(port + i)],
                env={**os.environ, **env}, stderr=stderr, start_new_session=True)
        started.append((f"http://127.0.0.1:{port + i}", process, log))
    return started


def wait_ready(replicas: list[tuple[str, subprocess.Popen[bytes], Path]], timeout: float
               ) -> str | None:
    import httpx

    deadline = time.monotonic() + timeout
    for url, process, log in replicas:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            if process.poll() is not None:
                return f"the replica on {url} exited; its log, {log}:\n{log.read_text()}"
            if time.monotonic() > deadline:
                return f"the replica on {url} is not ready after {timeout:g} s (log: {log})"
            time.sleep(0.05)
    return None


def stop(replicas: list[tuple[str, subprocess.Popen[bytes], Path]]) -> None:
    for _, process, _ in replicas:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for _, process, _ in replicas:
        try:
            process.wait(40)  # a drain takes up to 30 s
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def fire(urls: list[str], count: int, team: str) -> list[tuple[int, int]]:
    """`count` requests at once, the i-th to urls[i % len]: (replica, status) pairs."""
    import aiohttp

    body = {"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def one(i: int) -> tuple[int, int]:
            async with http.post(urls[i % len(urls)] + "/v1/chat/completions", json=body,
                                 headers={"x-team": team}) as reply:
                await reply.read()
                return i % len(urls), reply.status
        return list(await asyncio.gather(*(one(i) for i in range(count))))


def report(urls: list[str], count: int, db_url: str) -> None:
    from policies.ledger import Ledger
    from policies.records import open_records

    team = f"bench-{int(time.time())}"
    started = time.perf_counter()
    replies = asyncio.run(fire(urls, count, team))
    seconds = time.perf_counter() - started
    statuses = Counter(status for _, status in replies)
    served = Counter(replica for replica, status in replies if status == 200)
    print(f"{count} requests at once as team {team} in {seconds:.2f} s: "
          + ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))
          + "; served by replica " + ", ".join(f"{i}: {served[i]}" for i in range(len(urls))))
    records = open_records(db_url)
    try:
        deadline = time.monotonic() + 10  # each replica writes its ledger every 0.5 s
        while True:
            row = next((r for r in Ledger(records).spend_report("team") if r["subject"] == team),
                       None)
            if (row and row["requests"] >= statuses[200]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        records.close()
    if row:
        print(f"settled spend in the ledger: ${row['usd']:.6f} over {row['requests']} requests")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policy", nargs="?", help="a .gw file or graph.json (default: a demo)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--port", type=int, default=8100, help="the first replica's port")
    parser.add_argument("--redis", default=os.environ.get("GW_STATE_URL") or REDIS)
    parser.add_argument("--db", default=os.environ.get("GW_DB_URL") or DATABASE)
    parser.add_argument("--requests", type=int, default=0,
                        help="fire this many requests at once once they are up, and report")
    parser.add_argument("--logs", help="a folder for the replicas' logs (default: a new one)")
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas must be 1 or more")
    if not args.redis.startswith(("redis://", "rediss://", "unix://")):
        parser.error("the replicas need shared counters: --redis (GW_STATE_URL) redis://...")
    problem = check_stores(args.redis, args.db)
    if problem:
        print(f"bench.cluster: {problem}", file=sys.stderr)
        return 1
    logs = Path(args.logs or tempfile.mkdtemp(prefix="gwc-cluster-"))
    logs.mkdir(parents=True, exist_ok=True)
    policy = Path(args.policy) if args.policy else logs / "demo.gw"
    if not args.policy:
        policy.write_text(DEMO)
    env = {"GW_STATE_URL": args.redis, "GW_DB_URL": args.db}
    replicas = start(policy, args.replicas, args.port, env, logs)
    interrupted = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt
    for each in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job ignores it
        signal.signal(each, on_signal)
    try:
        problem = wait_ready(replicas, timeout=60)
        if problem:
            print(f"bench.cluster: {problem}", file=sys.stderr)
            return 1
        print(f"{len(replicas)} replicas of {policy}, sharing {args.redis} and the database:")
        for url, process, log in replicas:
            print(f"  {url}  (pid {process.pid}, log {log})")
        if args.requests:
            report([url for url, _, _ in replicas], args.requests, args.db)
        print("Ctrl-C stops them.", flush=True)
        while True:
            for url, process, log in replicas:
                if process.poll() is not None:
                    print(f"bench.cluster: the replica on {url} exited ({process.returncode}); "
                          f"see {log}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        interrupted = True
        return 0
    finally:
        if interrupted:
            print("\nstopping: each replica drains and flushes its ledger", flush=True)
        stop(replicas)


if __name__ == "__main__":
    sys.exit(main())
