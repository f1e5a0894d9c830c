"""What gwc adds over calling the upstream directly, and its throughput.

    python -m bench.overhead        # needs nginx and wrk (apt-get install nginx-light wrk)

nginx answers a fixed chat completion. At one connection, a sequential client
measures latency to nginx directly and through gwc (p50, p99, and what gwc
adds). wrk then measures requests per second at 8 and 32 connections, in
alternating rounds, through gwc running a full policy (auth by headers, a few
hundred rules, a pool, retries, breakers, quotas, budgets, a cache block) and
through a bare Starlette passthrough on the same HTTP client. Targets (design.md): p50 <= 1 ms and
p99 <= 3 ms added; throughput >= 60% of the passthrough.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time

import aiohttp

from bench.policies import policy as generated_rules
from bench.upstream import nginx
from bench.upstream_client import serving, wrk

BODY = {"model": "m3", "messages": [{"role": "user", "content": "ping"}]}
HEADERS = {"x-gw-team": "team-1", "x-gw-user": "bench"}
ROUNDS, SECONDS = 5, 4  # timings here move by a third between runs: alternate, take medians


def full_policy(upstream: str) -> str:
    rules = generated_rules(300)
    rules = rules.replace('provider openai { type = openai; api_key = env("OPENAI_API_KEY", '
                          '"sk-bench") }',
                          f'provider openai {{ type = openai; base_url = "{upstream}/v1"; '
                          'api_key = "sk-bench" }')
    rules = rules.replace("provider local { type = mock }", f"""provider local {{
  type     = openai_compatible
  base_url = "{upstream}/v1"
  timeout  = 10s
  retry {{ attempts = 2; backoff = 50ms..1s }}
  breaker {{ failures = 50; window = 30s; cooldown = 5s }}
}}""")
    return rules + "auth { mode = headers }\n"


async def latencies(url: str, count: int, headers: dict[str, str]) -> list[float]:
    samples = []
    async with aiohttp.ClientSession() as session:
        for _ in range(50):
            async with session.post(url, json=BODY, headers=headers) as reply:
                await reply.read()
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, json=BODY, headers=headers) as reply:
                await reply.read()
                assert reply.status == 200, await reply.text()
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


def main() -> None:
    with nginx(18901) as upstream, tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench.gw")
        with open(path, "w") as handle:
            handle.write(full_policy(upstream))
        command = ["compiler.cli", "serve", path, "--port", "18902"]
        with open(os.path.join(folder, "access.log"), "w") as log, \
                serving(command, 18902, stderr=log) as gateway, \
                serving(["bench.client_passthrough", "aiohttp", upstream, "18903"], 18903) as bare:
            direct = asyncio.run(latencies(upstream + "/v1/chat/completions", 2000, {}))
            through = asyncio.run(latencies(gateway + "/v1/chat/completions", 2000, HEADERS))
            print("one connection, 2,000 sequential requests (ms)")
            print(f"{'':<10} {'p50':>7} {'p99':>7}")
            for name, samples in (("direct", direct), ("gwc", through)):
                print(f"{name:<10} {percentile(samples, 50):>7.3f} {percentile(samples, 99):>7.3f}")
            print(f"{'added':<10} {percentile(through, 50) - percentile(direct, 50):>7.3f} "
                  f"{percentile(through, 99) - percentile(direct, 99):>7.3f}")
            print(f"\nthroughput (req/s, wrk, median of {ROUNDS} alternating rounds of "
                  f"{SECONDS} s)")
            for connections in (8, 32):
                bares, ours = [], []
                for _ in range(ROUNDS):
                    bares.append(wrk(bare, connections, SECONDS))
                    ours.append(wrk(gateway, connections, SECONDS, headers=HEADERS))
                passthrough, gwc = statistics.median(bares), statistics.median(ours)
                print(f"{connections:>2} connections: passthrough {passthrough:>7.0f}, "
                      f"gwc {gwc:>7.0f} ({gwc / passthrough:.0%})")


if __name__ == "__main__":
    main()
