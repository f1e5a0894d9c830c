"""`gwc simulate` on a generated log of a million requests: how long, how many a second.

`python -m bench.simulate [N]` writes N (default 1,000,000) lines of the traffic
format, a month of traffic for 12 teams and 400 users, and a policy that meets
them with a quota per user, a daily budget per team with alerts (which some
teams run out of), a pool, a cheaper route for one team and a `deny`; then it
runs `gwc simulate POLICY --traffic LOG --format json` as a user would (the
process's start and the policy's compile included) and prints the wall time,
requests/s and µs a request, against the target of a million in a minute.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from compiler.traffic import timestamp

POLICY = """
provider oa { type = openai; base_url = "http://127.0.0.1:9/v1"; api_key = "x" }
model big   { provider = oa; name = "big"; input = $3/1M; output = $15/1M }
model small { provider = oa; name = "small"; input = $0.15/1M; output = $0.6/1M }
model alt   { provider = oa; name = "alt"; input = $2.5/1M; output = $10/1M }
pool either { strategy = round_robin; members = [big, alt] }
route {
  when model == "banned" -> deny "not here"
  when team == "t0" -> small
  when model == "big" -> either
  otherwise -> requested
}
quota per user { requests = 60 per minute }
budget per team { limit = $25 per day; alert = [50%, 90%] }
auth { mode = headers; team_header = "x-team" }
"""
START = 1_780_000_000.0  # 2026-05-28
MONTH = 30 * 86400.0


def generate(path: Path, count: int) -> None:
    """`count` requests spread over a month, in time order, a few teams far busier."""
    rng = random.Random(13)
    models = ["big"] * 5 + ["small"] * 4 + ["banned"]
    step = MONTH / count
    with path.open("wb") as out:
        for i in range(count):
            team = min(int(rng.expovariate(0.35)), 11)
            out.write(orjson.dumps({
                "ts": timestamp(START + i * step), "team": f"t{team}",
                "user": f"u{team}-{rng.randrange(40)}", "key": f"k{team}",
                "endpoint": "chat", "model": rng.choice(models), "stream": False,
                "tools": False, "tokens_in": rng.randrange(50, 2000),
                "tokens_out": rng.randrange(20, 600), "max_tokens": 800,
                "answered_by": "big", "status": 200}) + b"\n")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as folder:
        policy, log, report = (Path(folder) / name for name in
                               ("policy.gw", "traffic.jsonl", "report.json"))
        policy.write_text(POLICY)
        started = time.perf_counter()
        generate(log, count)
        print(f"generated {count:,} lines ({log.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "compiler.cli", "simulate", str(policy),
                        "--traffic", str(log), "--format", "json", "-o", str(report)],
                       check=True, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        result = json.loads(report.read_text())
    print(f"gwc simulate, {count:,} requests: {wall:.1f} s wall, {count / wall:,.0f} "
          f"requests/s, {wall / count * 1e6:.1f} µs a request (target: 1M in under 60 s)")
    print(f"  served {result['served']:,}, refused {result['refused']}, "
          f"{len(result['budgets_exhausted'])} budgets run out, {len(result['alerts'])} alerts")


if __name__ == "__main__":
    main()
