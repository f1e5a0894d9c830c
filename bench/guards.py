"""Whether the guards' detectors find what they should and nothing else, per detector.

    python -m bench.guards            # the table
    python -m bench.guards --misses   # also list every false hit and miss

The labelled set is `bench/guard_cases.jsonl`: one string per line with the detector
it is meant for and whether that detector should fire (`{"text", "kind", "hit"}`).
About half of each detector's lines are true hits in the shapes people write them;
the other half are near-misses (Luhn-invalid card numbers, wrong IBAN checksums,
order ids, version strings, dates, UUIDs, git SHAs, prefixes without a key). A line
counts as a hit when `detect(text, [kind])` returns anything. What counts as each
kind is decided in `policies.detectors`' docstring.

Targets (issue 12): precision >= 99% and recall >= 95% for every detector. The mean
time per line is printed last: detectors run on every guarded request.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from policies.detectors import NAMES, detect

CASES = Path(__file__).with_name("guard_cases.jsonl")


@dataclass(frozen=True)
class Case:
    """One labelled line."""

    text: str
    kind: str
    hit: bool


def precision(true_pos: int, false_pos: int) -> float:
    """Of what was found, the share that should have been (1 when nothing was found)."""
    found = true_pos + false_pos
    return true_pos / found if found else 1.0


def recall(true_pos: int, false_neg: int) -> float:
    """Of what should have been found, the share that was (1 when there was nothing)."""
    wanted = true_pos + false_neg
    return true_pos / wanted if wanted else 1.0


@dataclass(frozen=True)
class Score:
    """One detector's counts and the lines it got wrong."""

    kind: str
    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int
    wrong: tuple[Case, ...]

    @property
    def precision(self) -> float:
        return precision(self.true_pos, self.false_pos)

    @property
    def recall(self) -> float:
        return recall(self.true_pos, self.false_neg)


def load(path: Path = CASES) -> list[Case]:
    """The labelled set."""
    with path.open(encoding="utf-8") as f:
        return [Case(**json.loads(line)) for line in f if line.strip()]


def score(cases: list[Case]) -> list[Score]:
    """Each detector's precision and recall over its own lines, in `NAMES` order."""
    scores = []
    for kind in NAMES:
        counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        wrong = []
        for case in (c for c in cases if c.kind == kind):
            found = bool(detect(case.text, [kind]))
            key = ("t" if found == case.hit else "f") + ("p" if found else "n")
            counts[key] += 1
            if found != case.hit:
                wrong.append(case)
        scores.append(
            Score(kind, counts["tp"], counts["fp"], counts["fn"], counts["tn"], tuple(wrong))
        )
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="list false hits and misses")
    args = parser.parse_args()
    cases = load()
    start = time.perf_counter()
    scores = score(cases)
    elapsed = time.perf_counter() - start
    print(f"{'detector':<12} {'lines':>5} {'hits':>5} {'tp':>4} {'fp':>4} {'fn':>4} "
          f"{'precision':>9} {'recall':>7}")  # fmt: skip
    for s in scores:
        lines = s.true_pos + s.false_pos + s.false_neg + s.true_neg
        print(
            f"{s.kind:<12} {lines:>5} {s.true_pos + s.false_neg:>5} {s.true_pos:>4} "
            f"{s.false_pos:>4} {s.false_neg:>4} {s.precision:>9.1%} {s.recall:>7.1%}"
        )
    print(f"\n{len(cases)} lines, {elapsed / len(cases) * 1e6:.0f} µs per line")
    if args.misses:
        for s in scores:
            for case in s.wrong:
                label = "miss" if case.hit else "false hit"
                print(f"{s.kind:<12} {label:<9} {case.text!r}")
    ok = all(s.precision >= 0.99 and s.recall >= 0.95 for s in scores)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
