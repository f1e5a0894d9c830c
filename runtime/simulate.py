"""`gwc simulate`'s engine: a traffic log replayed through a policy's real mechanisms.

Each logged request is decided by the policy's graph and admitted by the
same `Limiter` the gateway admits with (runtime/limiting.py, over
`MemoryCounters`), on a clock that reads the request's logged time instead of
the wall's: so a quota, a budget, a downgrade or an alert behaves here as it
would have behaved live on that traffic, and a test holds the two equal
(tests/runtime/test_simulate_live.py). What the live pipeline does around
the mechanisms is done here the same way, stage by stage:

- plan (runtime/pipeline/plan.py): `budget.team` and its kin read the
  Limiter's shares as the last admission left them; no rule is `no_route`,
  a `deny` is `deny`, a chain left empty is `no_route` too;
- limits (runtime/pipeline/limits.py): `build`, one `admit` with the
  decision's lease, `Alerts.check` on what it applied (recorded, never
  sent), a refusal by its first enforcing counter, a budget's `downgrade`;
- usage: the reservation settles at once to the logged tokens priced at the
  answering model's prices in this policy (`runtime.pricing.cost`), or is
  released for a cache hit, as the cache stage releases it.

No upstream is called: requests never fail, time out or fall back, and the
model that answers is the chain's first (a pool's member that answered then
if it is one, else its first member). Requests replay one at a time, each
settled before the next, so a concurrency quota never fills.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from compiler.compiled import (
    CompiledPolicy,
    Deployment,
    Logged,
    PoolTarget,
    timestamp,
)
from policies.memory_counters import MemoryCounters
from policies.periods import period_key
from runtime import pricing
from runtime.alerts import Alerts
from runtime.limiting import Applied, Limiter, downgraded, value_text

OUTCOMES = ("served", "quota", "budget", "deny", "no_route")
REFUSALS = OUTCOMES[1:]
DIMENSIONS = ("team", "user", "model")
T = TypeVar("T")


class Clock:
    """The simulated clock: the time of the request being replayed."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def done(coroutine: Coroutine[Any, Any, T]) -> T:
    """A coroutine that never waits, run to its end without an event loop.

    The memory store's calls are coroutines only to share the store's interface
    with Redis; none of them awaits anything that suspends, so each runs to its
    end on its first step, and a million of them need no loop's scheduling.
    """
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a simulated store call waited, which memory counters never do")


@dataclass(slots=True)
class Tally:
    """One subject's figures: requests served, refused by cause and when first, spend."""

    served: int = 0
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSALS, 0))
    usd: float = 0.0
    first_refused: float | None = None

    def json(self, subject: str | None) -> dict[str, Any]:
        return {"subject": subject, "served": self.served, "refused": dict(self.refused),
                "usd": round(self.usd, 9), "first_refused":
                    timestamp(self.first_refused) if self.first_refused is not None else None}


@dataclass(slots=True)
class Outcome:
    """What became of one replayed request."""

    outcome: str  # one of OUTCOMES
    model: str | None = None  # the model that answered (served only)
    usd: float = 0.0
    cache: bool = False  # answered from the cache


@dataclass
class Simulation:
    """One policy's replay: feed it logged requests in time order, then read `result`."""

    policy: CompiledPolicy
    clock: Clock = field(default_factory=Clock)
    limiter: Limiter = field(init=False)
    alerts: Alerts = field(init=False)
    requests: int = 0
    totals: Tally = field(default_factory=Tally)
    by: dict[str, dict[str | None, Tally]] = field(
        default_factory=lambda: {dimension: {} for dimension in DIMENSIONS})
    routes: dict[str, int] = field(default_factory=dict)  # answering model -> requests
    cached: int = 0
    days: dict[str, dict[str | None, float]] = field(default_factory=dict)  # day -> team -> usd
    exhausted: list[dict[str, Any]] = field(default_factory=list)
    fired: list[dict[str, Any]] = field(default_factory=list)
    _exhausted_seen: set[tuple[str, str]] = field(default_factory=set)
    _reads_budget: bool = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = Limiter(MemoryCounters(), self.clock)
        self.alerts = Alerts(None, lambda _name: None, _never_posted, self.clock)
        self._reads_budget = any(getattr(node, "attr", "").startswith("budget.")
                                 for node in self.policy.graph.nodes)

    def replay(self, logged: Logged) -> Outcome:
        """One request, as the gateway would have taken it at its logged time."""
        self.clock.now = logged.at
        request = logged.request
        limiter = self.limiter
        if self._reads_budget:
            shares = limiter.shares
            budget = {dimension: share for dimension, value in (
                ("team", request.team), ("user", request.user), ("key", request.key))
                if value is not None
                and (share := shares.get((dimension, value_text(value)))) is not None}
            request = dataclasses.replace(request, budget=budget)
        decision = self.policy.decide(request)
        if decision.rule is None:
            return self._count(logged, Outcome("no_route"))
        if decision.deny is not None:
            return self._count(logged, Outcome("deny"))
        if not decision.targets:  # `requested`, naming a model the policy lacks
            return self._count(logged, Outcome("no_route"))
        held = None
        if decision.quotas or decision.budgets:
            counters = limiter.build(decision, {"team": request.team, "user": request.user,
                                                "key": request.key}, request.get)
            if counters is not None:
                admission, held = done(limiter.admit(counters, request.tokens, request.max_tokens))
                applied = counters.applied(admission.verdicts)
                self._watch(applied)
                if not admission.admitted:
                    assert admission.refused_by is not None
                    kind = applied[admission.refused_by].limit.kind
                    return self._count(logged, Outcome("budget" if kind == "budget"
                                                       else "quota"))
                decision = downgraded(decision, counters, admission.verdicts, self.policy.target)
        if logged.cache == "hit" and decision.cache is not None:
            if held is not None:
                limiter.settle(held, None, None)
            return self._count(logged, Outcome("served", logged.answered_by, 0.0, True))
        deployment = answering(decision.targets[0], logged.answered_by)
        tokens_in = int(request.tokens)
        cost = pricing.cost({"prompt_tokens": tokens_in, "completion_tokens": logged.tokens_out},
                            deployment.model)
        if held is not None:
            limiter.settle(held, cost, float(tokens_in + logged.tokens_out))
        return self._count(logged, Outcome("served", deployment.name, cost))

    def _watch(self, applied: list[Applied]) -> None:
        """Alerts the admission crosses (the gateway's own once-per-period check) and
        budgets it finds spent, each the first time in its period."""
        alerts = self.alerts
        alerts.check(applied)
        queue = alerts.queue
        while not queue.empty():
            alert = queue.get_nowait()
            self.fired.append({"subject": alert.subject, "threshold": alert.threshold,
                               "at": timestamp(self.clock.now),
                               "budget": self._where(alert.budget, applied),
                               "period": alert.period})
        for item in applied:
            verdict = item.verdict
            if not verdict.allowed and verdict.reason == "limit" and item.limit.kind == "budget":
                period = period_key(item.limit.period, self.clock.now)
                key = (item.limit.counter, period)
                if key not in self._exhausted_seen:
                    self._exhausted_seen.add(key)
                    self.exhausted.append({"budget": self._where(item.limit.counter, applied),
                                           "subject": item.subject,
                                           "at": timestamp(self.clock.now), "period": period})

    def _where(self, counter: str, applied: list[Applied]) -> str:
        """A budget named as its block's `file:line`, which a reader can open."""
        block = next(item.block for item in applied if item.limit.counter == counter)
        return f"{os.path.relpath(block.source.file, self.policy.folder)}:{block.source.line}"

    def _count(self, logged: Logged, outcome: Outcome) -> Outcome:
        self.requests += 1
        request = logged.request
        at = logged.at
        served = outcome.outcome == "served"
        rows = self.by
        for tally in (self.totals, _tally(rows["team"], request.team),
                      _tally(rows["user"], request.user), _tally(rows["model"], request.model)):
            if served:
                tally.served += 1
                tally.usd += outcome.usd
            else:
                tally.refused[outcome.outcome] += 1
                if tally.first_refused is None:
                    tally.first_refused = at
        if served:
            model = outcome.model or "(cache)"
            self.routes[model] = self.routes.get(model, 0) + 1
            self.cached += outcome.cache
            if outcome.usd:
                day = _day(math.floor(at / 86400))
                teams = self.days.get(day)
                if teams is None:
                    teams = self.days[day] = {}
                teams[request.team] = teams.get(request.team, 0.0) + outcome.usd
        return outcome

    def result(self) -> dict[str, Any]:
        """The figures in interface.md's shape, with the keys docs/simulate.md adds."""
        totals = self.totals
        served = totals.served
        return {
            "requests": self.requests, "served": served, "refused": dict(totals.refused),
            "usd": round(totals.usd, 9),
            "by": {dimension: [tally.json(subject) for subject, tally in sorted(
                rows.items(), key=lambda pair: (pair[0] is None, pair[0] or ""))]
                for dimension, rows in self.by.items()},
            "budgets_exhausted": self.exhausted,
            "alerts": self.fired,
            "routes": [{"model": model, "requests": count,
                        "share": round(count / served, 6) if served else 0.0}
                       for model, count in sorted(self.routes.items(),
                                                  key=lambda pair: (-pair[1], pair[0]))],
            "cache_hits": self.cached,
            "spend_by_day": [{"day": day, "usd": round(sum(teams.values()), 9),
                              "teams": {team if team is not None else "": round(usd, 9)
                                        for team, usd in sorted(
                                            teams.items(), key=lambda p: p[0] or "")}}
                             for day, teams in sorted(self.days.items())],
        }


def answering(target: Deployment | PoolTarget, answered_by: str | None) -> Deployment:
    """The model taken to answer: the chain's first; of a pool, the member that answered
    then if it is one, else the pool's first (no live figures to order members by)."""
    if isinstance(target, PoolTarget):
        return target.by_name.get(answered_by or "") or target.members[0][0]
    return target


def simulate(policies: Iterable[Simulation], traffic: Iterable[Logged],
             each: Callable[[int, Logged, list[Outcome]], None] | None = None,
             first: int = 1) -> None:
    """Replay `traffic` (in time order) through every simulation, in step; `each`
    hears every request's outcomes with its number (from `first`), for a trace."""
    runs = list(policies)
    for number, logged in enumerate(traffic, first):
        outcomes = [run.replay(logged) for run in runs]
        if each is not None:
            each(number, logged, outcomes)


@functools.lru_cache(maxsize=4096)
def _day(day: int) -> str:
    """The UTC date of a day counted from the epoch, as `2026-12-01`."""
    return timestamp(day * 86400.0)[:10]


def _tally(rows: dict[str | None, Tally], subject: str | None) -> Tally:
    found = rows.get(subject)
    if found is None:
        found = rows[subject] = Tally()
    return found


async def _never_posted(_url: str, _body: dict[str, Any]) -> None:
    """Alerts are recorded by the simulation, never sent: no queue is ever run."""
