"""`gwc simulate POLICY --traffic LOG.jsonl [--against OLD] [--format text|json|html]
[-o FILE] [--trace FILE]`: the command around runtime/simulate.py's engine.

Exit codes as interface.md says: 0 done; 1 a policy has errors; 2 usage (a
traffic file that cannot be read, or a line not in the traffic format, named
with its line). The log is read whole and put in time order first (an export
already is: the sort then costs one pass), parsed with orjson and checked by
compiler/traffic.py's own rules line by line. With a log of more than
PROGRESS_LINES lines and a terminal on standard error, a rich progress bar
shows the replay.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import IO, Any

import orjson

from compiler.compiled import CompiledPolicy, Refused, load
from compiler.traffic import Logged, TrafficError, parse, timestamp
from runtime.simulate import Outcome, Simulation, simulate

PROGRESS_LINES = 100_000
STEP = 10_000  # requests between progress updates


class Usage(Exception):
    """What the command cannot use: exit 2."""


def run(args: argparse.Namespace) -> int:
    try:
        policies = [_policy(args.file)] + ([_policy(args.against)] if args.against else [])
    except Refused as refused:
        sys.stderr.write(refused.report)
        return 1
    try:
        traffic = read(args.traffic)
    except Usage as problem:
        print(f"gwc: {problem}", file=sys.stderr)
        return 2
    runs = [Simulation(policy) for policy in policies]
    trace = open(args.trace, "w", encoding="utf-8") if args.trace else None  # noqa: SIM115
    try:
        _replay(runs, traffic, trace)
    finally:
        if trace is not None:
            trace.close()
    results = [run.result() for run in runs]
    report: dict[str, Any] = results[0] if len(results) == 1 else \
        {"new": results[0], "old": results[1]}
    from runtime.simulate_render import render

    text = render(report, args.format, args.file, args.against)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as sink:
            sink.write(text)
        print(f"gwc: report written to {args.output}", file=sys.stderr)
    return 0


def _policy(path: str) -> CompiledPolicy:
    policy = load(path)
    policy.warm()
    return policy


def read(path: str) -> list[Logged]:
    """Every line of the log, in time order (a stable sort: lines of one moment keep
    their order)."""
    try:
        with open(path, "rb") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise Usage(f"cannot read the traffic log: {exc}") from None
    out: list[Logged] = []
    ordered, last = True, -float("inf")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Usage(f"{path}: line {number}: not JSON: {exc}") from None
        try:
            logged = parse(record, number)
        except TrafficError as exc:
            raise Usage(f"{path}: {exc}") from None
        if logged.at < last:
            ordered = False
        last = logged.at
        out.append(logged)
    if not ordered:
        out.sort(key=lambda logged: logged.at)
    return out


def _replay(runs: list[Simulation], traffic: list[Logged], trace: IO[str] | None) -> None:
    each: Callable[[int, Logged, list[Outcome]], None] | None = None
    if trace is not None:
        def each(number: int, logged: Logged, outcomes: list[Outcome]) -> None:
            assert trace is not None
            outcome = outcomes[0]
            trace.write(orjson.dumps({
                "n": number, "ts": timestamp(logged.at), "outcome": outcome.outcome,
                "model": outcome.model, "usd": outcome.usd}).decode() + "\n")
    if len(traffic) <= PROGRESS_LINES or not sys.stderr.isatty():
        simulate(runs, traffic, each)
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("replaying", total=len(traffic))
        for start in range(0, len(traffic), STEP):
            chunk = traffic[start:start + STEP]
            simulate(runs, chunk, each, start + 1)
            progress.advance(task, len(chunk))
