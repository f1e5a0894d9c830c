"""Compile time and per-request decision time, graph against reference interpreter.

    python -m bench.compiler_bench            # 10, 100, 1k and 10k rules
    python -m bench.compiler_bench --sizes 10k

Figures are medians; the ratio is measured in the same run. Targets
(design.md): at 10k rules, evaluation <= 5 us and >= 50x the interpreter,
compile <= 3 s; `gwc check` on a 300-line policy <= 300 ms wall.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.policies import policy, requests
from compiler.driver import check
from compiler.interpreter import interpret
from compiler.request import Request

SIZES = {"10": 10, "100": 100, "1k": 1_000, "10k": 10_000}


def _median_us(fn, items, repeat: int = 9) -> float:  # type: ignore[no-untyped-def]
    """Median over `repeat` passes of one pass's time per call, after a warm-up pass.

    Timing whole passes keeps the clock's own cost out of sub-microsecond figures;
    the median keeps this machine's noise out of the comparison.
    """
    for item in items:
        fn(item)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        for item in items:
            fn(item)
        samples.append((time.perf_counter_ns() - started) / len(items))
    return statistics.median(samples) / 1000


def bench_size(rules: int, folder: str) -> dict[str, float]:
    path = os.path.join(folder, f"bench-{rules}.gw")
    with open(path, "w") as handle:
        handle.write(policy(rules))
    compile_times = []
    for _ in range(5):
        started = time.perf_counter()
        ctx = check(path)
        compile_times.append(time.perf_counter() - started)
    assert ctx.graph is not None and not ctx.has_errors, ctx.diagnostics[:3]
    graph = ctx.graph
    batch = [Request.from_fields(r) for r in requests(2000, rules)]
    for request in batch[:200]:
        assert graph.plan(request) == interpret(graph.policy, request)
    graph_us = _median_us(graph.plan, batch)
    slow = batch[: max(20, 4000 // rules)]
    interp_us = _median_us(lambda r: interpret(graph.policy, r), slow, repeat=3)
    return {"rules": rules, "compile_s": statistics.median(compile_times),
            "graph_us": graph_us, "interp_us": interp_us, "ratio": interp_us / graph_us,
            "nodes": len(graph.nodes), "plans": len(graph.plans)}


CHECK_RULES = 269  # with its providers, models, pool and limits: a 300-line policy


def check_wall_ms(folder: str, runs: int = 15) -> tuple[float, int]:
    """`gwc check` on a 300-line policy as a subprocess, process start included:
    the median of `runs` runs after one to warm the disk cache and lark's."""
    text = policy(CHECK_RULES)
    path = os.path.join(folder, "three-hundred.gw")
    with open(path, "w") as handle:
        handle.write(text)
    command = [sys.executable, "-m", "compiler.cli", "check", path]
    subprocess.run(command, capture_output=True, check=False)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), text.count("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{os.cpu_count()} CPUs, load average {load} (figures vary with what else runs)")
        print(f"{'rules':>6} {'compile s':>10} {'nodes':>7} {'plans':>6} {'graph us':>9} "
              f"{'interp us':>10} {'ratio':>8}")
        for size in args.sizes:
            r = bench_size(SIZES[size], folder)
            print(f"{r['rules']:>6} {r['compile_s']:>10.3f} {r['nodes']:>7} {r['plans']:>6} "
                  f"{r['graph_us']:>9.2f} {r['interp_us']:>10.1f} {r['ratio']:>7.0f}x")
        wall, lines = check_wall_ms(folder)
        print(f"gwc check, {lines}-line policy: {wall:.0f} ms median wall (process start "
              "included)")


if __name__ == "__main__":
    main()
