"""Quotas and budgets: what a request asks of the counters, what it is answered.

One admission covers every quota and budget a request meets, all or nothing:
if one enforcing limit refuses, none of them takes anything, so a request
refused by its team's budget does not use up its key's quota. A store keeps
the counters (`MemoryCounters` for one process, `RedisCounters` for several
replicas) and both give the same answers to the same calls; the caller passes
the wall clock `now` to every call, so that tests can move time and every
replica reasons on the same time line.

The mechanisms, one per kind:

- `requests`: GCRA, a token bucket kept as one number (the theoretical arrival
  time), in whole microseconds so that a hundred admissions add up exactly; a
  fresh bucket admits `burst` (default `limit`) at once, then one per
  `window / limit` seconds. `retry_after` is the exact wait.
- `tokens`: a sliding window of BUCKETS buckets. A request takes its estimate
  (input + requested output) before the call; `settle` corrects its bucket to
  the real usage. Buckets leave the window up to window/BUCKETS late, never
  early, so no true sliding window ever holds more than `limit`.
  `retry_after` is when enough has fallen out.
- `concurrency`: slots held as leases until `settle`, or until the lease given
  to `admit` runs out (a process killed mid-call frees its slots by itself).
  `retry_after` is CONCURRENCY_RETRY; `reset` is when the last lease ends.
- `budget`: USD per calendar period (see `policies.periods`). Admitted if
  settled spend + live reservations + this cost <= limit; the cost is held as
  a lease like a slot, and `settle` turns it into spend. Spend settles into the
  period it was reserved in.

Non-enforcing limits (`enforce=False`: a shadow quota, an `over = allow`
budget) never refuse and report whether they would have. A shadow quota counts
what an enforcing one would have admitted, so that its reports stay what
enforcement would do; a non-enforcing budget counts every admitted request's
cost, since that money is spent either way.

Capped subjects: limits with a `family` (one block's `per meta[...]` or
`per header[...]` counters) share at most `cap` places. A subject keeps its
place until its limit's current span ends: the budget's period, or one window
after its last admission for a quota. A new subject beyond the cap is refused
with reason "subjects" and counts nothing (`retry_after`: when the oldest
place ends); subjects holding a place go on.
Deviation from the first sketch of this API: `Limit.subject` names the
subject within its family (say the header's value, or a digest of it), so
that a block's requests and tokens lines for one user share one place; left
empty, the counter's id is the subject.

A budget's share is (settled spend + live reservations) / limit: counting the
requests in flight makes `budget.team > 90%` turn before the last ones land,
which is the point of reserving.
"""

from __future__ import annotations

import abc
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from policies.periods import PERIODS, period_bounds

KINDS = ("requests", "tokens", "concurrency", "budget")
BUCKETS = 30  # a tokens window's resolution: an entry leaves it within window/30 of on time
SLACK = 1e-9  # relative: a budget of $0.30 admits $0.10 + $0.20, whatever floats make of it
CONCURRENCY_RETRY = 1.0  # seconds: a slot frees when some call ends, which nothing can foresee
RETAIN = 1.0  # a period's counter outlives its end by this many periods (the ledger rebuilds older)
HOLD = 3600.0  # seconds past its lease a reservation can still settle its real cost
_INF = math.inf
# A named tuple (Limit, Verdict, ...) made from a plain tuple in C, not through the class's
# Python __new__: a quarter of a microsecond less, and the limits stage makes a dozen a request.
new_tuple = tuple.__new__


class StoreUnavailable(Exception):
    """The counter store could not answer (unreachable, timed out, erred).

    The caller chooses between refusing (503) and degrading to memory counters.
    Messages name the store and what failed, never a URL's credentials.
    """


class Limit(NamedTuple):
    """One counter and what a request takes from it. A named tuple: the limits stage
    makes several per request, and a frozen dataclass costs three times as much."""

    counter: str          # stable id built by the caller ("q3:requests:team=research"), no secrets
    kind: str             # "requests" | "tokens" | "concurrency" | "budget"
    limit: float          # N (requests, tokens, slots) or USD
    window: float = 0.0   # seconds, for requests and tokens
    period: str = ""      # "day" | "week" | "month", for budgets
    burst: float | None = None  # requests only; None = limit
    cost: float = 1.0     # what this request takes: 1, estimated tokens, 1 slot, maximum USD
    enforce: bool = True  # False: shadow quota / over = allow budget: counted, never refuses
    family: str = ""      # capped subjects: the block's id; "" = uncapped
    cap: int | None = None
    subject: str = ""     # the subject within its family; "" = the counter


class Verdict(NamedTuple):
    """One limit's answer, as this admission leaves its counter."""

    allowed: bool       # allowed (for a non-enforcing limit: would have been)
    remaining: float    # what is left after this admission
    reset: float        # seconds until the counter is back to full (budgets: the period ends)
    retry_after: float  # 0 when allowed
    share: float | None = None  # budgets: (spent + reserved) / limit after this admission
    reason: str = ""    # "" | "limit" | "subjects"


@dataclass(slots=True)
class Admission:
    admitted: bool                # every enforcing limit allowed
    verdicts: list[Verdict]       # one per Limit, in order
    reservation: str | None       # to settle with; None when refused or nothing is held
    refused_by: int | None        # index of the first enforcing limit that refused


def validate(limits: Sequence[Limit]) -> None:
    """Refuse limits no store can count, before any store is asked, item by item."""
    # Every admission pays for this, so it is comparisons on unpacked fields, no
    # generators: a chained comparison is False for NaN and for either infinity.
    # Repeats are looked for pair by pair only when some counter name comes twice.
    seen: set[tuple[str, str]] | None = None
    if len(limits) > 1 and len({item[0] for item in limits}) < len(limits):
        seen = set()
    for counter, kind, limit, window, period, burst, cost, _, family, cap, _ in limits:
        if kind not in KINDS:
            raise ValueError(f"unknown limit kind `{kind}`")
        if seen is not None:
            if (kind, counter) in seen:
                raise ValueError(f"counter `{counter}` appears twice in one admission")
            seen.add((kind, counter))
        if not (0 < limit < _INF and 0 <= cost < _INF and -_INF < window < _INF
                and (burst is None or -_INF < burst < _INF)):
            raise ValueError(f"counter `{counter}`: limit must be > 0 and cost >= 0")
        if kind == "budget":
            if period not in PERIODS:
                raise ValueError(f"counter `{counter}`: period must be day, week or month")
        elif window <= 0 and kind != "concurrency":
            raise ValueError(f"counter `{counter}`: a {kind} quota needs a window")
        if family and (cap is None or cap < 0):
            raise ValueError(f"counter `{counter}`: a family needs a cap >= 0")


def subjects(limits: Sequence[Limit], now: float,
             lease: float) -> dict[tuple[str, str], tuple[int, float]]:
    """(family, subject) -> (cap, until when this admission keeps its place).

    A place lasts the longest span of its limits here: a budget's period, a
    quota's window, a slot's lease.
    """
    spans: dict[tuple[str, str], tuple[int, float]] = {}
    for item in limits:
        if item.family:
            if item.kind == "budget":
                until = period_bounds(item.period, now)[1]
            else:
                until = now + (lease if item.kind == "concurrency" else item.window)
            pair = (item.family, item.subject or item.counter)
            cap, longest = spans.get(pair, (item.cap or 0, until))
            spans[pair] = (cap, max(longest, until))
    return spans


class Prepared:
    """Limits a store has validated and worked out once, to admit with again and again.

    A gateway's requests meet the same few sets of counters (one per decision and
    subjects), so the work that depends only on the counters (validation, the
    counters' state found, their keys and fixed figures written) is done once per
    set, and each admission does the arithmetic. A store's own subclass holds that
    work; it is for that store only.
    """

    __slots__ = ("families", "limits")

    def __init__(self, limits: Sequence[Limit]) -> None:
        validate(limits)
        self.limits = tuple(limits)
        self.families = any(item.family for item in limits)

    def check(self, costs: Sequence[float]) -> None:
        """Refuse an admission's costs no counter can take, before anything counts:
        the one check `validate` makes of a Limit's own cost, the rest holding still."""
        if len(costs) != len(self.limits):
            raise ValueError(f"{len(costs)} costs for {len(self.limits)} counters")
        if costs and min(costs) >= 0 and sum(costs) < _INF:  # a NaN or an inf makes the sum one
            return
        for item, cost in zip(self.limits, costs, strict=True):
            if not 0 <= cost < _INF:
                raise ValueError(f"counter `{item.counter}`: cost must be >= 0")


class CounterStore(abc.ABC):
    """Where quota and budget counters live; every call takes the caller's `now`."""

    async def admit(self, limits: Sequence[Limit], now: float, lease: float) -> Admission:
        """Check every limit and take from all of them, or from none.

        Slots and budget reservations are leases of `lease` seconds (the call's
        timeout and a margin): past it they stop counting, settled or not.
        """
        return await self.admit_prepared(self.prepare(limits), [item.cost for item in limits],
                                         now, lease)

    @abc.abstractmethod
    def prepare(self, limits: Sequence[Limit]) -> Prepared:
        """`limits` validated (ValueError, before anything counts) and worked out for
        `admit_prepared`; their costs there are the call's, not these."""

    @abc.abstractmethod
    async def admit_prepared(self, prepared: Prepared, costs: Sequence[float], now: float,
                             lease: float) -> Admission:
        """`admit` of the prepared limits, each taking its cost from `costs`."""

    @abc.abstractmethod
    async def settle(self, reservation: str, actual: Mapping[str, float], now: float) -> None:
        """End a reservation: `actual` maps counters to their real cost.

        Tokens and budget counters missing from `actual` are released at 0;
        concurrency slots are always freed; requests are never refunded. A
        reservation settles once, from the process that admitted it, within
        HOLD seconds of its lease; after that it is a no-op.
        """

    @abc.abstractmethod
    def settle_soon(self, reservation: str, actual: Mapping[str, float], now: float) -> None:
        """`settle`, without waiting for it: a request's answer must not wait for a
        round trip. In memory it is done at once; a shared store sends it with its
        next call, or alone within a few ms. A failure is logged, and the
        reservation then lapses with its lease; `close` sends what still waits.
        """

    async def settle_many(self, settles: Sequence[tuple[str, Mapping[str, float]]],
                          now: float) -> None:
        """Several `settle`s; a store that can send them together overrides this."""
        for reservation, actual in settles:
            await self.settle(reservation, actual, now)

    @abc.abstractmethod
    async def share(self, counters: Sequence[tuple[str, float, str]],
                    now: float) -> dict[str, float]:
        """(counter, limit, period) -> (spent + live reservations) / limit, this period."""

    @abc.abstractmethod
    async def seed(self, counter: str, period: str, spent: float, now: float) -> bool:
        """Set this period's settled spend if the store holds none; whether it did.

        Rebuilds the current period from the durable ledger after a restart:
        call it before serving, since a settle first makes the period held.
        """

    @abc.abstractmethod
    async def spent(self, counter: str, period: str, now: float) -> float:
        """The settled spend of the period holding `now`."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable if the store cannot answer now."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Let go of connections; the store is not used after."""


def forget_expired(held: OrderedDict[str, tuple[float, Any]], now: float) -> None:
    """Drop the reservations nobody settled, well past their lease (callers that leaked
    them), oldest first: a store keeps them in the order it made them."""
    while held:
        keep, _ = next(iter(held.values()))  # OrderedDict: O(1), unlike a dict's
        if keep > now:
            return
        held.popitem(last=False)
