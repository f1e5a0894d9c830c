"""`gwc simulate POLICY --traffic LOG.jsonl [--against OLD] [--format text|json|html]
[-o FILE] [--trace FILE]`: the command around runtime/simulate.py's engine.

Exit codes as interface.md says: 0 done; 1 a policy has errors; 2 usage (a
traffic file that cannot be read, or a line not in the traffic format, named
with its line). Lines are parsed with orjson and checked by compiler/traffic.py's
own rules; a log in time order (an export is) is replayed as it is parsed, a
log that is not is sorted first. With a log of more than PROGRESS_LINES lines
and a terminal on standard error, a rich progress bar shows the replay.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import orjson

from compiler.compiled import (
    CompiledPolicy,
    Logged,
    Refused,
    Request,
    TrafficError,
    load,
    parse,
    timestamp,
)
from runtime.simulate import Outcome, Simulation, simulate

PROGRESS_LINES = 100_000
PARALLEL_LINES = 50_000  # a log this long is parsed in a second process (see `batches`)
BATCH = 10_000  # lines parsed, replayed and shown on the progress bar at a time


class Usage(Exception):
    """What the command cannot use: exit 2."""


def run(args: argparse.Namespace) -> int:
    try:
        policies = [_policy(args.file)] + ([_policy(args.against)] if args.against else [])
    except Refused as refused:
        sys.stderr.write(refused.report)
        return 1
    try:
        runs = _replayed(policies, args.traffic, args.trace)
    except Usage as problem:
        print(f"gwc: {problem}", file=sys.stderr)
        return 2
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


def _replayed(policies: list[CompiledPolicy], path: str,
              trace_path: str | None) -> list[Simulation]:
    """The simulations, each having replayed the whole log in time order.

    A log in time order (what `gwc log export` writes) is replayed as it is
    read, a batch at a time; one that goes back in time is read whole, sorted,
    and replayed again from the start.
    """
    lines = _lines(path)
    # A million logged requests are a million objects made at once: the collector,
    # left on, would scan them again and again as they are made, for nothing.
    gc.disable()
    try:
        runs = [Simulation(policy) for policy in policies]
        with _trace(trace_path) as trace:
            try:
                _replay(runs, batches(path, lines), trace, len(lines))
                return runs
            except _Unordered:
                pass
        runs = [Simulation(policy) for policy in policies]
        traffic = [logged for batch in batches(path, lines) for logged in batch]
        traffic.sort(key=lambda logged: logged.at)
        with _trace(trace_path) as trace:
            _replay(runs, [traffic], trace, len(lines))
        return runs
    finally:
        gc.enable()


def _policy(path: str) -> CompiledPolicy:
    policy = load(path)
    policy.warm()
    return policy


def _lines(path: str) -> list[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read().splitlines()
    except OSError as exc:
        raise Usage(f"cannot read the traffic log: {exc}") from None


def batches(path: str, lines: list[bytes], parallel: int = PARALLEL_LINES
            ) -> Iterator[list[Logged]]:
    """The log's requests a batch at a time, in file order. A long log is parsed in a
    second process while this one replays: parsing is a quarter of the work, and the
    parsed lines cross as plain tuples, which pickle at a tenth of a `Logged`'s cost."""
    jobs = [(path, first + 1, lines[first:first + BATCH])
            for first in range(0, len(lines), BATCH)]
    if len(lines) < parallel:
        for job in jobs:
            yield [_logged(row) for row in _rows(job)]
        return
    with multiprocessing.get_context("fork").Pool(1) as pool:
        for rows in pool.imap(_rows, jobs):
            yield [_logged(row) for row in rows]


Row = tuple[Any, ...]  # a Logged's fields, its request's spread out: see _row, _logged


def _rows(job: tuple[str, int, list[bytes]]) -> list[Row]:
    """Lines checked and parsed by compiler/traffic.py, as rows."""
    path, first, lines = job
    out: list[Row] = []
    for number, raw in enumerate(lines, first):
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
        r = logged.request
        out.append((logged.at, r.model, r.user, r.team, r.key, r.endpoint, r.stream, r.tools,
                    r.tokens, r.max_tokens, r.temperature, r.headers, r.meta, r.budget,
                    logged.tokens_out, logged.answered_by, logged.usd, logged.cache,
                    logged.status))
    return out


def _logged(row: Row) -> Logged:
    return Logged(row[0], Request(*row[1:14]), *row[14:])


class _Unordered(Exception):
    """A line earlier than the one before it: the log must be sorted first."""


@contextlib.contextmanager
def _trace(path: str | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
        return
    with open(path, "w", encoding="utf-8") as sink:
        yield sink


def _replay(runs: list[Simulation], traffic: Iterable[list[Logged]], trace: IO[str] | None,
            total: int) -> None:
    each: Callable[[int, Logged, list[Outcome]], None] | None = None
    if trace is not None:
        def each(number: int, logged: Logged, outcomes: list[Outcome]) -> None:
            assert trace is not None
            outcome = outcomes[0]
            trace.write(orjson.dumps({
                "n": number, "ts": timestamp(logged.at), "outcome": outcome.outcome,
                "model": outcome.model, "usd": outcome.usd}).decode() + "\n")
    with contextlib.ExitStack() as stack:
        advance: Callable[[int], None] | None = None
        if total > PROGRESS_LINES and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress

            progress = stack.enter_context(Progress(console=Console(stderr=True),
                                                    transient=True))
            task = progress.add_task("replaying", total=total)

            def advance(count: int) -> None:
                progress.advance(task, count)
        first, last = 1, -math.inf
        for batch in traffic:
            for logged in batch:
                if logged.at < last:
                    raise _Unordered
                last = logged.at
            simulate(runs, batch, each, first)
            first += len(batch)
            if advance is not None:
                advance(len(batch))
