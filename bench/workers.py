"""`gwc serve --workers 2` against one worker, both counting in Redis.

    python -m bench.workers     # needs nginx, wrk and Redis on 127.0.0.1:6379

The full policy of `bench.overhead` (a virtual key, its quotas and budgets
enforced), served by one process and by two on one port, wrk at 32
connections in alternating rounds; the figure is the ratio of the medians.
One process uses about one core, so on this 2-core machine two workers can
at most double it, less what nginx, wrk and Redis take of the same cores.
"""

from __future__ import annotations

import os
import statistics
import tempfile

import redis

from bench.overhead import REDIS, ROUNDS, SECONDS, prepare
from bench.upstream import nginx
from bench.upstream_client import serving, wrk


def main() -> None:
    with nginx(18931) as upstream, tempfile.TemporaryDirectory() as folder:
        path, database, headers = prepare(folder, upstream)
        redis.Redis.from_url(REDIS).flushdb()
        os.environ.update(GW_DB_URL=database, GW_STATE_URL=REDIS)
        with open(os.path.join(folder, "access.log"), "w") as log, \
                serving(["compiler.cli", "serve", path, "--port", "18932"], 18932,
                        stderr=log) as one, \
                serving(["compiler.cli", "serve", path, "--port", "18933", "--workers", "2"],
                        18933, stderr=log) as two:
            ones, twos = [], []
            for _ in range(ROUNDS):
                ones.append(wrk(one, 32, SECONDS, headers=headers))
                twos.append(wrk(two, 32, SECONDS, headers=headers))
        single, double = statistics.median(ones), statistics.median(twos)
        print(f"32 connections, Redis counters: 1 worker {single:.0f} req/s, "
              f"2 workers {double:.0f} req/s ({double / single:.2f}x)")


if __name__ == "__main__":
    main()
