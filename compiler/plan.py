"""What the gateway does with one request: the plan a graph leaf holds, and its chain.

A `Plan` names the policy's blocks by index, so that the graph's leaves are
small and equal plans are shared. `route` turns a plan's rule into the
fallback chain for one request, `requested` resolved to the model it named;
`gwc explain`, `gwc test` and the gateway all resolve it here.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from compiler.policy import Rule


@dataclass(frozen=True, slots=True)
class Plan:
    """What the gateway does with one request, by index into the policy's tables."""

    rule: int | None  # the route rule that matched; None when none did (404)
    quotas: tuple[int, ...] = ()
    budgets: tuple[int, ...] = ()
    cache: int | None = None
    guards: tuple[int, ...] = ()


def route(rule: Rule | None, requested: str | None, declared: Container[str]) -> list[str]:
    """The fallback chain: model and pool names, `requested` resolved.

    `requested` drops out when the request names nothing the policy declares;
    a pool stays a pool, since its pick happens per request.
    """
    if rule is None or rule.deny is not None:
        return []
    chain: list[str] = []
    for target in rule.targets:
        name = target.name
        if target.kind == "requested":
            name = requested or ""
            if name not in declared:
                continue
        if name not in chain:
            chain.append(name)
    return chain
