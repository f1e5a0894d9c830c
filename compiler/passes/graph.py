"""BuildGraph: the policy compiled to its decision graph.

Built during checking, not only for `gwc compile`, because the exact lints
(shadowed rules, requests no rule matches, unpriced models under a budget)
read their answers off it. Not built while a file has syntax errors: a
graph of part of a policy would answer for requests the whole one routes
elsewhere, so `compile`, `explain`, `test` and `serve` refuse it.
"""

from __future__ import annotations

from compiler.context import Context
from compiler.graph import compile_policy, policy_version


def run(ctx: Context) -> None:
    if not ctx.syntax_ok:
        return
    ctx.graph = compile_policy(ctx.policy, policy_version(ctx.sources))
