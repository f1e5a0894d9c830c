"""One call to check a policy: run the passes, return what they found."""

from __future__ import annotations

from collections.abc import Mapping

from compiler.context import Context
from compiler.passes import run_passes
from dsl.diagnostics import sort_key


def check(path: str, env: Mapping[str, str] | None = None,
          timings: dict[str, float] | None = None) -> Context:
    ctx = Context(root=path) if env is None else Context(root=path, env=env)
    run_passes(ctx, timings)
    ctx.diagnostics.sort(key=sort_key)
    return ctx
