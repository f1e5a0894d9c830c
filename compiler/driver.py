"""One call to check a policy: run the passes, return what they found."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping

from compiler.context import Context
from compiler.passes import run_passes
from dsl.diagnostics import sort_key


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cyclic GC while compiling.

    A compile allocates hundreds of thousands of small acyclic objects (nodes,
    spans, conditions) that it keeps; each automatic collection rescans them
    all for cycles that are not there. Measured on a 10k-rule policy: 3.5 s
    with the collector, 2.2 s without. Reference counting still frees what
    the compile drops; the collector resumes when it ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def check(path: str, env: Mapping[str, str] | None = None,
          timings: dict[str, float] | None = None) -> Context:
    ctx = Context(root=path) if env is None else Context(root=path, env=env)
    with _no_cycle_collection():
        run_passes(ctx, timings)
    ctx.diagnostics.sort(key=sort_key)
    return ctx
