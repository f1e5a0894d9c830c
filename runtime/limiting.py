"""A plan's quotas and budgets, counted: one admission before the call, one settle after.

The plan names the quota and budget blocks a request meets; `Limiter` turns
them into the counters of `policies.limits` and asks the counter store once
for all of them (one Redis round trip). What it answers becomes the request's
fate: a 429 with the real wait, a 402, a downgrade to a cheaper model, or the
go-ahead with OpenAI's `x-ratelimit-*` figures.

Counters are named by what they count (compiler/counters.py): the block's
kind, subject and `when`, then the subject's value, what is counted and the
period. A reload that changes a limit, or moves its block, keeps its counter
(the new limit applies to the spend so far); one that changes its subject,
its `when` or its period starts afresh.

When the shared store cannot answer, each block's `on_store_error` decides:
one `refuse` among the request's blocks answers 503; otherwise the request is
counted in this replica's own memory, and the gateway reports itself
degraded (`/readyz`, a metric, the log) until the store answers again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple

from compiler.compiled import Budget, Decision, Deployment, PoolTarget, Quota, block_id
from policies.limits import (
    Admission,
    CounterStore,
    Limit,
    Prepared,
    StoreUnavailable,
    Verdict,
    new_tuple,
)
from policies.memory_counters import MemoryCounters
from policies.periods import period_bounds
from runtime import pricing
from runtime.by_identity import ByIdentity
from runtime.errors import GatewayError

logger = logging.getLogger("gwc")
# a quota's window in seconds; a quota `per month` is a sliding 30 days (budgets, unlike
# quotas, keep calendar months: policies/periods.py)
SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0, "week": 604800.0,
           "month": 2592000.0}
FIXED_KEPT = 4096
SHARES_KEPT = 65536
SHARED = frozenset(("team", "user", "key"))  # the budgets `budget.team` and its kin read
MIN_LEASE = 60.0  # seconds a reservation is held at least, if the chain's timeouts are shorter
# (the default of Limiter.min_lease; GW_MIN_LEASE sets it, runtime/state.py)
SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@/")


@dataclass(slots=True)
class Held:
    """What one admission holds until the answer is known, to settle after it."""

    store: CounterStore
    reservation: str | None
    budgets: tuple[str, ...]  # counters to charge the real cost to (none: no most cost)
    tokens: tuple[str, ...]  # counters to correct to the real tokens


class Applied(NamedTuple):
    """One counted block, as the admission saw it: for headers, alerts and the log (a
    named tuple, made for every counter of every request, at a third of a frozen
    dataclass's cost)."""

    block: Quota | Budget
    limit: Limit  # the counter, as `Counters` keeps it (cost 1.0, not this request's)
    verdict: Verdict
    subject: str  # "team=research": whose counter, never a secret


@functools.lru_cache(maxsize=65536)
def value_text(value: str) -> str:
    """A subject's value as it may appear in a counter's name: itself when short and
    plain, else a digest (a header's value is the client's to choose)."""
    if len(value) <= 64 and set(value) <= SAFE:
        return value
    return digest(value)


def digest(value: str) -> str:
    """A value named without its text: `#` and 64 bits of its SHA-256."""
    return "#" + hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass
class Limiter:
    counters: CounterStore
    clock: Callable[[], float] = time.time
    local: MemoryCounters = field(default_factory=MemoryCounters)
    seed: Callable[[str, float, float], float] | None = None  # ledger: (counter, start, end)
    on_degraded: Callable[[bool, str], None] | None = None
    timed: Callable[[str, float, bool], None] | None = None  # (op, seconds, ok): metrics
    min_lease: float = MIN_LEASE
    degraded: bool = False
    shares: dict[tuple[str, str], float] = field(default_factory=dict)  # (team, x) -> share
    _seeded: dict[str, float] = field(default_factory=dict)  # counter -> its period's end
    _ready: dict[Counters, float] = field(default_factory=dict)  # all seeded until then
    # a decision's blocks and lease, worked out once: a policy's decisions are made once
    # each and kept, so one is known by its identity (and kept no longer than FIXED_KEPT)
    counting: ByIdentity[Decision, Counting] = field(
        default_factory=lambda: ByIdentity(Counting.of, FIXED_KEPT), init=False, repr=False,
        compare=False)

    def build(self, decision: Decision, identity: dict[str, str | None],
              request_get: Callable[[str], Any]) -> Counters | None:
        """The counters this request meets (None: none): its decision's blocks for its
        subjects' values, made the first time a request meets them and kept."""
        counting = self.counting(decision)
        whose: list[str | None] = []
        for _, dimension in counting.blocks:
            if dimension:
                value = identity[dimension] if dimension in identity else request_get(dimension)
                whose.append(None if value is None else subject_name(dimension, str(value)))
            else:
                whose.append("global")
        key = tuple(whose)
        found = counting.kept.get(key)
        if found is None:
            if len(counting.kept) >= FIXED_KEPT:  # a client may name its own subjects
                counting.kept.clear()
            found = counting.kept[key] = Counters.of(counting, key)
        return found if found.limits else None

    async def admit(self, counters: Counters, tokens: float,
                    max_tokens: float | None) -> tuple[Admission, Held]:
        """One admission for every counter, the request taking its estimated tokens and
        its most cost; on a store failure, as the blocks say."""
        most = pricing.most(tokens, max_tokens, counters.prices) if counters.budgets else 0.0
        costs = counters.costs((1.0, tokens + (max_tokens or 0), most))
        lease = max(counters.lease, self.min_lease)
        now = self.clock()
        store: CounterStore = self.counters
        started = time.perf_counter()
        try:
            if self._unseeded(counters, now):
                await self._seed(store, counters, now)
            admission = await store.admit_prepared(counters.prepared(store), costs, now, lease)
            self._timed("admit", started, True)
            if self.degraded:
                self._recovered()
        except StoreUnavailable as failure:
            self._timed("admit", started, False)
            self._degrade(str(failure))
            if counters.refuse_unshared:
                raise GatewayError(503, "the gateway's shared counters are unreachable, and "
                                   "this request's limits refuse to count without them",
                                   "state_unavailable") from failure
            store = self.local
            if self._unseeded(counters, now):
                await self._seed(store, counters, now)
            admission = await store.admit_prepared(counters.prepared(store), costs, now, lease)
        verdicts = admission.verdicts
        for at, whose in counters.shared:
            share = verdicts[at].share
            if share is not None:
                if len(self.shares) >= SHARES_KEPT:
                    self.shares.clear()  # a client naming its own users: start over
                self.shares[whose] = share
        return admission, Held(store, admission.reservation, counters.budgets, counters.tokens)

    def settle(self, held: Held, cost: float | None, tokens: float | None) -> None:
        """End a hold without waiting for the store: the client has its answer first."""
        if held.reservation is not None:
            held.store.settle_soon(held.reservation, _actual(held, cost, tokens), self.clock())

    def _unseeded(self, counters: Counters, now: float) -> list[Limit]:
        """The budgets this process has not counted yet this period."""
        if self.seed is None or now < self._ready.get(counters, 0.0):
            return []
        seeded = self._seeded
        missing = [limit for limit in counters.budget_limits
                   if now >= seeded.get(limit.counter, 0.0)]
        if not missing:  # none again until the first of their periods ends
            if len(self._ready) >= FIXED_KEPT:
                self._ready.clear()
            self._ready[counters] = min((seeded[limit.counter]
                                         for limit in counters.budget_limits), default=math.inf)
        return missing

    async def _seed(self, store: CounterStore, counters: Counters, now: float) -> None:
        """A budget's spend this period, from the ledger, the first time this process
        counts it (after a restart of the process, or of Redis)."""
        assert self.seed is not None  # else nothing is unseeded
        for limit in self._unseeded(counters, now):
            start, end = period_bounds(limit.period, now)
            spent = await asyncio.to_thread(self.seed, limit.counter, start, end)
            await store.seed(limit.counter, limit.period, spent, now)
            self._seeded[limit.counter] = end

    def _timed(self, op: str, started: float, ok: bool) -> None:
        if self.timed is not None:
            self.timed(op, time.perf_counter() - started, ok)

    def _degrade(self, reason: str) -> None:
        if not self.degraded:
            self.degraded = True
            if self.on_degraded is not None:
                self.on_degraded(True, reason)

    def _recovered(self) -> None:
        if self.degraded:
            self.degraded = False
            self._seeded.clear()  # Redis may have come back empty: rebuild from the ledger
            self._ready.clear()
            if self.on_degraded is not None:
                self.on_degraded(False, "the shared counters answer again")


@dataclass(frozen=True, slots=True)
class Template:
    """One counter of a block, but for the subject's value."""

    counter: str  # the block's part of the name: `q:1a2b3c4d5e:`
    suffix: str  # `:requests`, `:tokens`, `:concurrency`; "" for a budget
    kind: str
    limit: float
    window: float = 0.0
    period: str = ""
    burst: float | None = None
    enforce: bool = True
    family: str = ""
    cap: int | None = None

    def limit_for(self, subject: str) -> Limit:
        return Limit(f"{self.counter}{subject}{self.suffix}", self.kind, self.limit,
                     self.window, self.period, self.burst, 1.0, self.enforce, self.family,
                     self.cap, subject)


@dataclass(frozen=True, slots=True)
class Counting:
    """What a decision's quotas and budgets count, but for the request's subjects and
    costs: each block with the dimension its subject reads ("" for global) and its
    counters' templates, the prices of the models that bound a reservation (each one's
    `pricing.bounds`), its lease, and the `Counters` made for each set of subjects."""

    blocks: tuple[tuple[Quota | Budget, str], ...]
    templates: tuple[tuple[Template, ...], ...]  # one tuple per block
    prices: tuple[tuple[float, float, float], ...]
    lease: float
    # subjects (one per block, None where the request has no value) -> their Counters;
    # at most FIXED_KEPT, since a client may name its own subjects (a header's value)
    kept: dict[tuple[str | None, ...], Counters] = field(default_factory=dict, compare=False,
                                                         hash=False)

    @classmethod
    def of(cls, decision: Decision) -> Counting:
        members: tuple[Quota | Budget, ...] = (*decision.quotas, *decision.budgets)
        blocks = tuple((block, "" if block.subject.kind == "global" else block.subject.dimension)
                       for block in members)
        prices = tuple(pricing.bounds(d.model) for d in _deployments(decision.targets))
        return cls(blocks, tuple(_templates(block) for block in members), prices,
                   lease(decision.targets))


# what a counter takes, by its place in (1.0, the request's tokens, its most cost)
COST_OF = {"requests": 0, "concurrency": 0, "tokens": 1, "budget": 2}


@dataclass(frozen=True, slots=True, eq=False)
class Counters:
    """The counters a request meets, for one decision and one set of subjects, with all
    that depends on them alone: made the first time (`Limiter.build`) and kept, so that
    an admission takes the request's costs and does the rest with what is here. Each
    limit's own cost is 1.0; `costs` gives the request's."""

    blocks: tuple[Quota | Budget, ...]  # one per counter, as `limits` and `subjects`
    limits: tuple[Limit, ...]
    subjects: tuple[str, ...]  # "team=research": whose counter, never a secret
    costs: Callable[[tuple[float, float, float]], tuple[float, ...]]  # see COST_OF
    prices: tuple[tuple[float, float, float], ...]
    lease: float
    budgets: tuple[str, ...]  # counters to charge the real cost to (none: no most cost)
    tokens: tuple[str, ...]  # counters to correct to the real tokens
    budget_limits: tuple[Limit, ...]  # to seed from the ledger
    shared: tuple[tuple[int, tuple[str, str]], ...]  # verdict index -> its `shares` key
    refuse_unshared: bool  # some block says `on_store_error = refuse`
    # for `rate_headers`: where the requests quotas are, and the tokens quotas (each kind
    # present, with its header names), and each limit's text as a header shows it
    rated: tuple[tuple[tuple[int, ...], tuple[bytes, bytes, bytes]], ...]
    limit_texts: tuple[bytes, ...]
    downgrades: tuple[int, ...]  # where the `over = downgrade` budgets are, for `downgraded`
    alerting: bool  # some budget has alerts, for `Alerts.check`
    shadows: bool  # some counter only counts (`mode = shadow`, `over = allow`)
    stores: dict[int, Prepared] = field(default_factory=dict)  # id(store) -> its preparation

    @classmethod
    def of(cls, counting: Counting, whose: tuple[str | None, ...]) -> Counters:
        counted: list[tuple[Quota | Budget, Limit, str]] = []
        for (block, _), templates, subject in zip(counting.blocks, counting.templates, whose,
                                                  strict=True):
            if subject is not None:
                counted += [(block, t.limit_for(subject), subject) for t in templates]
        counted = _apart(counted)
        blocks = tuple(block for block, _, _ in counted)
        limits = tuple(limit for _, limit, _ in counted)
        slots = [COST_OF[limit.kind] for limit in limits]
        costs: Callable[[tuple[float, float, float]], tuple[float, ...]] = \
            operator.itemgetter(*slots) if len(slots) > 1 else lambda figures: tuple(
                figures[slot] for slot in slots)
        budgets = tuple(limit for limit in limits if limit.kind == "budget")
        shared = tuple((at, (block.subject.dimension, subject.partition("=")[2]))
                       for at, (block, limit, subject) in enumerate(counted)
                       if limit.kind == "budget" and block.subject.dimension in SHARED)

        rated = tuple((places, names) for places, names in (
            (tuple(at for at, limit in enumerate(limits) if limit.kind == kind), names)
            for kind, names in (("requests", REQUESTS_HEADERS), ("tokens", TOKENS_HEADERS)))
            if places)
        return cls(blocks, limits, tuple(subject for _, _, subject in counted), costs,
                   counting.prices, counting.lease,
                   tuple(limit.counter for limit in budgets),
                   tuple(limit.counter for limit in limits if limit.kind == "tokens"), budgets,
                   shared, any(block.on_store_error == "refuse" for block in blocks),
                   rated, tuple(b"%d" % limit.limit for limit in limits),
                   tuple(at for at, block in enumerate(blocks)
                         if isinstance(block, Budget) and block.over == "downgrade"),
                   any(isinstance(block, Budget) and block.alerts for block in blocks),
                   not all(limit.enforce for limit in limits))

    def applied(self, verdicts: Sequence[Verdict]) -> list[Applied]:
        """Each counter with what the admission saw of it: made only when something reads
        them (a refusal, alerts, shadow counters, the log of what would be refused)."""
        return list(map(new_tuple, repeat(Applied), zip(
            self.blocks, self.limits, verdicts, self.subjects, strict=True)))

    def prepared(self, store: CounterStore) -> Prepared:
        """These limits as `store` admits them, worked out the first time it does."""
        found = self.stores.get(id(store))
        if found is None:
            found = self.stores[id(store)] = store.prepare(self.limits)
        return found


def _templates(block: Quota | Budget) -> tuple[Template, ...]:
    """A block's counters: its name is a digest of its condition."""
    name = block_id(block)
    family, cap = (name, block.max_values) if block.subject.keyed else ("", None)
    if isinstance(block, Budget):
        if block.limit is None:
            return ()
        return (Template(f"{name}:", f"/{block.limit.period}", "budget", block.limit.amount,
                         period=block.limit.period, enforce=block.over == "reject",
                         family=family, cap=cap),)
    enforce, out = block.mode != "shadow", []
    if block.requests is not None:
        out.append(Template(f"{name}:", f":requests/{block.requests.period}", "requests",
                            block.requests.amount,
                            SECONDS[block.requests.period], burst=block.burst,
                            enforce=enforce, family=family, cap=cap))
    if block.tokens is not None:
        out.append(Template(f"{name}:", f":tokens/{block.tokens.period}", "tokens",
                            block.tokens.amount,
                            SECONDS[block.tokens.period], enforce=enforce, family=family,
                            cap=cap))
    if block.concurrency is not None:
        out.append(Template(f"{name}:", ":concurrency", "concurrency",
                            float(block.concurrency), enforce=enforce, family=family, cap=cap))
    return tuple(out)


@functools.lru_cache(maxsize=65536)
def subject_name(dimension: str, value: str) -> str:
    """Whose counter a block counts a request on, as `dimension=value`; a header's
    value, which may carry a credential, by its digest only."""
    if dimension.startswith("header:"):
        return f"{dimension}={digest(value)}"
    return f"{dimension}={value_text(value)}"


def _apart(counted: list[tuple[Quota | Budget, Limit, str]],
           ) -> list[tuple[Quota | Budget, Limit, str]]:
    """Blocks alike in kind, subject, `when` and period (two `budget per team { ... }`
    of one period) keep a counter each: the second and later get `#2`, `#3`."""
    seen: dict[str, int] = {}
    out = []
    for block, limit, subject in counted:
        seen[limit.counter] = seen.get(limit.counter, 0) + 1
        if seen[limit.counter] > 1:
            limit = limit._replace(counter=f"{limit.counter}#{seen[limit.counter]}")
        out.append((block, limit, subject))
    return out


def _actual(held: Held, cost: float | None, tokens: float | None) -> dict[str, float]:
    """What a reservation settles to: None releases (there was no answer)."""
    actual: dict[str, float] = {}
    if cost is not None:
        actual.update(dict.fromkeys(held.budgets, cost))
    if tokens is not None:
        actual.update(dict.fromkeys(held.tokens, tokens))
    return actual


def lease(targets: Sequence[Deployment | PoolTarget]) -> float:
    """How long a reservation is held: as long as the chain may take, every model's
    every try at its total timeout (a stream's run is not bounded so; its cost settles
    all the same when it ends, only the hold on the counters lapses)."""
    return min(3600.0, sum(d.timeouts.total * max(1, d.retry.attempts)
                           for d in _deployments(targets)))


def _deployments(targets: Sequence[Deployment | PoolTarget]) -> list[Deployment]:
    out: list[Deployment] = []
    for target in targets:
        out += [m for m, _ in target.members] if isinstance(target, PoolTarget) else [target]
    return out


def downgraded(decision: Decision, counters: Counters, verdicts: Sequence[Verdict],
               targets: Callable[[str], Deployment | PoolTarget]) -> Decision:
    """The decision an admission leaves: the first over-budget `downgrade` budget's model
    (`targets` finds it by name) as the whole chain, or the decision as it was."""
    for at in counters.downgrades:
        if not verdicts[at].allowed:
            block = counters.blocks[at]
            assert isinstance(block, Budget)
            return dataclasses.replace(decision, targets=(targets(block.downgrade or ""),))
    return decision


def refusal(applied: Applied) -> GatewayError:
    """The answer for the first enforcing counter that refused."""
    verdict, limit = applied.verdict, applied.limit
    wait = str(max(1, math.ceil(verdict.retry_after)))
    if verdict.reason == "subjects":
        block = applied.block
        return GatewayError(429, f"too many distinct values of {str(block.subject)[4:]} this "
                            f"period (at most {block.max_values}); values already seen go on "
                            "working", "subject_limit_reached", headers={"Retry-After": wait})
    if limit.kind == "budget":
        return GatewayError(402, f"the {limit.period}ly budget of ${limit.limit:g} for "
                            f"{applied.subject} is spent", "budget_exceeded")
    what = {"requests": "requests", "tokens": "tokens", "concurrency": "requests in flight"}
    return GatewayError(429, f"quota of {limit.limit:g} {what[limit.kind]} for "
                        f"{applied.subject} reached; retry after {wait} s",
                        "rate_limit_exceeded", headers={"Retry-After": wait})


REQUESTS_HEADERS = (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
                    b"x-ratelimit-reset-requests")
TOKENS_HEADERS = (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens",
                  b"x-ratelimit-reset-tokens")


def rate_headers(counters: Counters, verdicts: Sequence[Verdict]) -> list[tuple[bytes, bytes]]:
    """OpenAI's `x-ratelimit-*` for the tightest requests and tokens quota applied.

    On every answer, so with the quotas' places and their limits' texts known
    beforehand (`Counters`), and a reset's text kept by its rounded value (`_written`)."""
    headers: list[tuple[bytes, bytes]] = []
    for places, (named_limit, named_remaining, named_reset) in counters.rated:
        tightest = places[0]
        verdict = verdicts[tightest]
        if len(places) > 1:
            limits = counters.limits
            least = verdict.remaining / limits[tightest].limit
            for at in places[1:]:
                share = verdicts[at].remaining / limits[at].limit
                if share < least:
                    tightest, least = at, share
            verdict = verdicts[tightest]
        reset = verdict.reset
        headers += ((named_limit, counters.limit_texts[tightest]),
                    (named_remaining, b"%d" % verdict.remaining),  # >= 0: %d is its floor
                    (named_reset, _written(max(0, round(reset * 1000)) if reset < 1
                                           else -math.ceil(reset))))
    return headers


@functools.lru_cache(maxsize=8192)
def _written(rounded: int) -> bytes:
    """A reset as a header's value, for the few thousand values a header shows.
    `rounded`: milliseconds (>= 0), or whole seconds negated."""
    return (f"{rounded}ms" if rounded >= 0 else duration(-rounded)).encode()


def duration(seconds: float) -> str:
    """As OpenAI writes a reset: `20ms`, `1s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
