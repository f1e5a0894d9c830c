"""The reference interpreter: the policy read top to bottom, one request at a time.

It is the slow path kept beside the fast one (as OPA keeps `AllRules` beside
its index): the decision graph must give the same plan for every request, and
the property tests hold it to that. It reads subjects the plain way, with no
folding into conditions, so that the graph builder's folding is checked too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from compiler.conditions import Cond, holds
from compiler.plan import Plan
from compiler.policy import Budget, Policy, Quota, Subject
from compiler.request import Request

__all__ = ["Plan", "applies", "interpret"]


class _Limit(Protocol):
    @property
    def subject(self) -> Subject: ...
    @property
    def cond(self) -> Cond: ...


def applies(limit: _Limit, limits: Sequence[_Limit], request: Request) -> bool:
    """Whether a quota or budget counts this request.

    A `per` block needs the request to have that identity, and steps aside for
    an identity that has a block of its own (`team "research"` replaces
    `per team` for research), whether or not that block's `when` holds.
    """
    subject = limit.subject
    if subject.kind != "global":
        value = request.get(subject.dimension)
        if value is None:
            return False
        if subject.kind == "one" and value != subject.value:
            return False
        if subject.kind == "per" and any(
            other.subject.kind == "one" and other.subject.dimension == subject.dimension
            and other.subject.value == value for other in limits
        ):
            return False
    return holds(limit.cond, request)


def interpret(policy: Policy, request: Request) -> Plan:
    rule = next((r.index for r in policy.rules if holds(r.cond, request)), None)
    quotas: list[Quota] = policy.quotas
    budgets: list[Budget] = policy.budgets
    return Plan(
        rule=rule,
        quotas=tuple(q.index for q in quotas if applies(q, quotas, request)),
        budgets=tuple(b.index for b in budgets if applies(b, budgets, request)),
        cache=next((c.index for c in policy.caches if holds(c.cond, request)), None),
        guards=tuple(g.index for g in policy.guards if holds(g.cond, request)),
    )
